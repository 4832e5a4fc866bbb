namespace OrleansStorage.Storage;

/// <summary>
/// What a primary knows of the forwards its replicas missed: per segment and replica, the byte
/// ranges of the writes that failed there (applied here), or that the replica missed something no
/// write can make up for (a snapshot's copy). A replica raises its version to any higher one a
/// forward carries, so after a missed write the next forward would make it look equal to us while
/// it lacks that write. So each later forward to it is judged here first: one that rewrites every
/// missed range makes the replica whole again and carries its version as usual; any other carries
/// <see cref="Segments.SegmentVersions.Unknown"/>, which makes the replica's version unknown (it
/// never matches again until a copy replaces the segment), and the replica must be resynced.
/// A host that lost the group keeps the records under its own id: it holds bytes the new primary
/// may lack, and the new primary's forwards are judged the same way on it.
/// Touched only on the grain's turns: no locking.
/// </summary>
public sealed class MissedForwards
{
    private readonly Dictionary<(SegmentAddress Segment, string HostId), Missed> _missed = [];

    public int Count => _missed.Count;

    /// <summary>A forward of [offset, offset + length) failed on the replica; null: one that no write makes up for.</summary>
    public void Add(SegmentAddress segment, string hostId, ByteRange? range)
    {
        if (!_missed.TryGetValue((segment, hostId), out var missed))
        {
            missed = new Missed();
            _missed[(segment, hostId)] = missed;
        }
        if (range is { } r)
        {
            missed.Ranges.Add(r);
        }
        else
        {
            missed.Uncoverable = true;
        }
    }

    /// <summary>
    /// The version a forward of <paramref name="range"/> (null: a preserve, which rewrites nothing)
    /// carries to the replica: <paramref name="version"/> when it missed nothing or this forward
    /// rewrites all it missed, else unknown. The record stays until <see cref="Delivered"/>: a
    /// forward that fails (refused again for its map) settles nothing, and its retry is judged
    /// against everything the replica missed, not only the last write.
    /// </summary>
    public long VersionFor(SegmentAddress segment, string hostId, ByteRange? range, long version)
    {
        if (_missed.Count == 0 || !_missed.TryGetValue((segment, hostId), out var missed))
        {
            return version;
        }
        return range is { } r && !missed.Uncoverable && missed.Ranges.TrueForAll(m => r.Covers(m)) ? version : Segments.SegmentVersions.Unknown;
    }

    /// <summary>
    /// A forward of <paramref name="range"/> that carried <paramref name="carried"/> was applied on
    /// the replica. Unknown: its version is unknown for good (until a copy replaces the segment),
    /// the record has done its work. Otherwise the missed ranges it rewrote are settled; any
    /// added while it was on its way and not covered by it stay.
    /// </summary>
    public void Delivered(SegmentAddress segment, string hostId, ByteRange? range, long carried)
    {
        if (_missed.Count == 0 || !_missed.TryGetValue((segment, hostId), out var missed))
        {
            return;
        }
        if (carried == Segments.SegmentVersions.Unknown)
        {
            _missed.Remove((segment, hostId));
            return;
        }
        if (range is { } r)
        {
            missed.Ranges.RemoveAll(m => r.Covers(m));
        }
        if (missed.Ranges.Count == 0 && !missed.Uncoverable)
        {
            _missed.Remove((segment, hostId));
        }
    }

    /// <summary>The replica's copy of the segment now equals ours (a fill installed or confirmed it).</summary>
    public void Forget(SegmentAddress segment, string hostId) => _missed.Remove((segment, hostId));

    public bool Has(SegmentAddress segment, string hostId) => _missed.Count > 0 && _missed.ContainsKey((segment, hostId));

    /// <summary>Every record, as (segment, replica): a copy, to change the records while going over it.</summary>
    public List<(SegmentAddress Segment, string HostId)> Records() => [.. _missed.Keys];

    /// <summary>
    /// What <paramref name="fromHostId"/> missed becomes what each of <paramref name="toHostIds"/>
    /// missed (merged with what they missed already): when the host that holds the writes others
    /// lack changes role, the records follow the bytes.
    /// </summary>
    public void Move(SegmentAddress segment, string fromHostId, IEnumerable<string> toHostIds)
    {
        if (!_missed.Remove((segment, fromHostId), out var missed))
        {
            return;
        }
        foreach (var hostId in toHostIds)
        {
            if (hostId == fromHostId)
            {
                continue;
            }
            foreach (var range in missed.Ranges)
            {
                Add(segment, hostId, range);
            }
            if (missed.Uncoverable)
            {
                Add(segment, hostId, range: null);
            }
        }
    }

    private sealed class Missed
    {
        public List<ByteRange> Ranges { get; } = [];
        public bool Uncoverable { get; set; }
    }
}

/// <summary>A byte range of a segment: [Offset, Offset + Length).</summary>
public readonly record struct ByteRange(long Offset, long Length)
{
    public bool Covers(ByteRange other) => Offset <= other.Offset && other.Offset + other.Length <= Offset + Length;
}
