using OrleansStorage.Maps;

namespace OrleansStorage.Leases;

/// <summary>
/// A storage server's side of its primary lease: whether it may serve a group as its primary
/// now. It may when it holds an unexpired lease granted for the epoch of its map, and every
/// earlier primary of the group that may still hold a lease has run out (docs/failures.md,
/// "Read leases"). All times are this host's monotonic clock.
/// </summary>
public sealed class PrimaryLease(string hostId, LeaseOptions options, TimeProvider clock)
{
    /// <summary>
    /// Waits for earlier primaries that management's activation <see cref="_depositionWaitsGrantor"/>
    /// knows of: each of its grants replaces them (one that gave its lease up is gone).
    /// </summary>
    private readonly Dictionary<(Guid VolumeId, int GroupIndex), long> _depositionWaits = [];
    private Guid _depositionWaitsGrantor;

    /// <summary>
    /// Waits for leases the granting activation cannot know of (granted before it, or depositions
    /// an earlier activation told of): they only run out.
    /// </summary>
    private readonly Dictionary<(Guid VolumeId, int GroupIndex), long> _unknownWaits = [];

    /// <summary>
    /// The newest generation that gave each of <see cref="_unknownWaits"/>: a grant of a newer one
    /// bounds every lease it did not grant, so it may shorten them to its own bound (two failovers
    /// in a row must not leave the first one's long bound standing).
    /// </summary>
    private readonly Dictionary<(Guid VolumeId, int GroupIndex), long> _unknownWaitGenerations = [];
    private long _depositionWaitsGeneration;

    /// <summary>
    /// Waits for leases granted before <see cref="_depositionWaitsGrantor"/>, as that activation
    /// bounds them: its bound only shrinks (once hosts witness it), so each of its grants may
    /// shorten them. Another grantor's first grant makes them <see cref="_unknownWaits"/>.
    /// </summary>
    private readonly Dictionary<(Guid VolumeId, int GroupIndex), long> _grantorUnknownWaits = [];
    private long _epoch = -1;
    private long _validUntil;
    private ClusterMap? _grantedOn;

    /// <summary>The activation that answered last, and its stamp: echoed in the next request.</summary>
    private Guid _lastAnswerGrantor;
    private long _lastAnswerStamp;

    /// <summary>
    /// The newest management generation this host has taken a grant from (docs/failures.md,
    /// "Leases without the database"): kept on disk by the caller before a grant of a newer one is
    /// applied, and never lowered, so this host never witnesses an activation it saw replaced.
    /// </summary>
    public long Generation { get; private set; }

    /// <summary>The generation kept on disk, at start.</summary>
    public void Restore(long generation) => Generation = Math.Max(Generation, generation);

    /// <summary>Taken just before a lease request is sent: the lease counts from here, never from the (later) answer.</summary>
    public long Now() => clock.GetTimestamp();

    /// <summary>The activation whose answer this host heard last.</summary>
    public Guid LastGrantor => _lastAnswerGrantor;

    /// <summary>A request on <paramref name="mapEpoch"/> that echoes the last grant.</summary>
    public LeaseRequest Request(long mapEpoch) => new(hostId, mapEpoch, Generation, _lastAnswerGrantor, _lastAnswerStamp);

    /// <summary>
    /// Takes any answer to a request, a refusal too: its generation, and its stamp to echo. The
    /// caller keeps a newer generation on disk first.
    /// </summary>
    public void Heard(LeaseGrant answer)
    {
        _lastAnswerGrantor = answer.Grantor;
        _lastAnswerStamp = answer.Stamp;
        Generation = Math.Max(Generation, answer.Generation);
    }

    /// <summary>The epoch of the lease held now, or -1.</summary>
    public long Epoch => Now() < _validUntil ? _epoch : -1;

    /// <summary>
    /// Takes a grant made on <paramref name="map"/> (same epoch) for a request sent at
    /// <paramref name="sentAt"/>. Groups this host leads now but has not led without a break since
    /// the map of the lease it held until now (<see cref="PlacementGroup.PrimarySinceEpoch"/>) wait
    /// out leases management cannot account for, except the groups of volumes
    /// management created since: no such lease covers them. Waits an earlier activation gave are
    /// kept until they run out: the grantor knows nothing of them, so its grants cannot lift them.
    /// Without <paramref name="echo"/> (its newer generation could not be kept on disk) the grant
    /// is held but neither adopted nor echoed.
    /// </summary>
    public void Apply(LeaseGrant grant, ClusterMap map, long sentAt, bool echo = true)
    {
        if (!grant.Granted || grant.Epoch != map.Epoch)
        {
            throw new ArgumentException($"grant for epoch {grant.Epoch} (granted: {grant.Granted}) does not fit the map at epoch {map.Epoch}", nameof(grant));
        }
        var now = Now();
        var held = now < _validUntil ? _grantedOn : null;
        if (grant.Grantor != _depositionWaitsGrantor)
        {
            // Management moved: the old activation may be gone with the depositions it recorded,
            // and the new one cannot tell when those deposed primaries gave their leases up.
            foreach (var (group, until) in _depositionWaits.Concat(_grantorUnknownWaits))
            {
                Delay(_unknownWaits, group, until);
                _unknownWaitGenerations[group] = Math.Max(_unknownWaitGenerations.GetValueOrDefault(group), _depositionWaitsGeneration);
            }
            _grantorUnknownWaits.Clear();
            _depositionWaitsGrantor = grant.Grantor;
            _depositionWaitsGeneration = grant.Generation;
        }
        _depositionWaits.Clear();
        foreach (var wait in grant.Waits)
        {
            Delay(_depositionWaits, (wait.VolumeId, wait.GroupIndex), now + Ticks(options.Stretch(wait.Remaining)));
        }
        var unknownUntil = now + Ticks(options.Stretch(grant.UnknownLeasesFor));
        foreach (var (group, until) in _grantorUnknownWaits.ToList())
        {
            if (unknownUntil < until)
            {
                _grantorUnknownWaits[group] = unknownUntil;
            }
        }
        foreach (var (group, until) in _unknownWaits.ToList())
        {
            if (unknownUntil < until && _unknownWaitGenerations.GetValueOrDefault(group) < grant.Generation)
            {
                _unknownWaits[group] = unknownUntil;
            }
        }
        if (grant.UnknownLeasesFor > TimeSpan.Zero)
        {
            var until = unknownUntil;
            var created = grant.VolumesCreatedSince ?? [];
            foreach (var volume in map.Volumes)
            {
                if (Array.IndexOf(created, volume.VolumeId) >= 0)
                {
                    continue;
                }
                var before = held?.FindVolume(volume.VolumeId);
                foreach (var group in volume.PlacementGroups)
                {
                    // Led without a break since a map it held a lease on: the held map alone would
                    // miss a move away and back in epochs this host never renewed at.
                    var ledBefore = before is not null && group.Index < before.PlacementGroups.Length
                        && before.PlacementGroups[group.Index].Primary == hostId
                        && group.PrimarySinceEpoch > 0 && group.PrimarySinceEpoch <= held!.Epoch;
                    if (group.Primary == hostId && !ledBefore)
                    {
                        Delay(_grantorUnknownWaits, (volume.VolumeId, group.Index), until);
                    }
                }
            }
        }
        _epoch = grant.Epoch;
        _validUntil = sentAt + Ticks(grant.Duration);
        _grantedOn = map;
        if (echo)
        {
            Heard(grant);
        }
        foreach (var waits in new[] { _unknownWaits, _grantorUnknownWaits })
        {
            foreach (var key in waits.Where(e => e.Value <= now).Select(e => e.Key).ToList())
            {
                waits.Remove(key);
            }
        }
        foreach (var key in _unknownWaitGenerations.Keys.Where(k => !_unknownWaits.ContainsKey(k)).ToList())
        {
            _unknownWaitGenerations.Remove(key);
        }
    }

    /// <summary>
    /// How long until this host may serve the group as the primary of <paramref name="map"/>:
    /// zero when it may now, null when it holds no lease for the map's epoch (renew first).
    /// </summary>
    public TimeSpan? WaitBeforeServing(ClusterMap map, Guid volumeId, int groupIndex)
    {
        var now = Now();
        if (_epoch != map.Epoch || now >= _validUntil)
        {
            return null;
        }
        if (_depositionWaits.Count == 0 && _unknownWaits.Count == 0 && _grantorUnknownWaits.Count == 0)
        {
            return TimeSpan.Zero; // the steady state: every request of a primary passes here
        }
        var group = (volumeId, groupIndex);
        var from = Math.Max(Math.Max(_depositionWaits.GetValueOrDefault(group), _unknownWaits.GetValueOrDefault(group)), _grantorUnknownWaits.GetValueOrDefault(group));
        return from > now ? Span(from - now) : TimeSpan.Zero;
    }

    private static void Delay(Dictionary<(Guid, int), long> waits, (Guid, int) group, long until) =>
        waits[group] = Math.Max(waits.GetValueOrDefault(group), until);

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * clock.TimestampFrequency);

    private TimeSpan Span(long ticks) => TimeSpan.FromSeconds((double)ticks / clock.TimestampFrequency);
}
