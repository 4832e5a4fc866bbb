using OrleansStorage.Maps;

namespace OrleansStorage.Leases;

/// <summary>
/// The hosts as witnesses of one management activation (docs/failures.md, "Leases without the
/// database"). Every grant carries this activation's generation and a stamp of its clock; the host
/// echoes the stamp of its last grant in its next request, with the newest generation it has taken
/// a grant from. An echo of stamp p from a host still at this generation proves that the host had
/// not gone over to a newer activation at p. A newer activation counts its own echoes the same way:
/// once a majority of the map's hosts echoed it, at most <see cref="LeaseOptions.WitnessWindow"/>
/// later no older activation can gather a majority of fresh echoes again (two majorities of one
/// set meet in a host, and a host never goes back to an older generation). So an activation that
/// hears fresh echoes from a majority may grant without reading the database: an activation that
/// replaced it bounds those grants without having to hear from it.
/// </summary>
public sealed class ActivationWitnesses(LeaseOptions options, TimeProvider clock, Guid grantorId)
{
    /// <summary>For each host, the newest stamp of this activation it echoed.</summary>
    private readonly Dictionary<string, long> _echoed = new(StringComparer.Ordinal);

    private bool _warnedOfNewer;

    /// <summary>This activation's generation, once it fenced the stored state.</summary>
    public long Generation { get; private set; }

    /// <summary>When a majority of the map's hosts had echoed this activation, or <see cref="long.MinValue"/> until then.</summary>
    public long EstablishedAt { get; private set; } = long.MinValue;

    public bool IsEstablished => EstablishedAt != long.MinValue;

    /// <summary>
    /// The newest generation a host said it took grants from, when newer than this activation's:
    /// after a restore of the database (or a rebuilt map) the stored generation can fall behind the
    /// hosts', and no host would witness this activation until it writes one past theirs.
    /// </summary>
    public long NewestHostGeneration { get; private set; }

    /// <summary>
    /// This activation wrote the state with <paramref name="generation"/>. <paramref name="alone"/>:
    /// nothing was stored before, so no earlier activation ever granted a lease, and there is nobody
    /// to outlast.
    /// </summary>
    public void Fenced(long generation, bool alone)
    {
        Generation = generation;
        if (alone && !IsEstablished)
        {
            EstablishedAt = clock.GetTimestamp();
        }
    }

    /// <summary>
    /// Hears a lease request. False when the host has taken a grant from a newer generation: it
    /// witnesses nothing for this activation, which may have been replaced (the database decides).
    /// </summary>
    public bool Heard(LeaseRequest request, ClusterMap map)
    {
        if (request.Generation > Generation)
        {
            NewestHostGeneration = Math.Max(NewestHostGeneration, request.Generation);
            return false;
        }
        if (request.LastGrantor == grantorId && request.Generation == Generation
            && request.LastGrantStamp > _echoed.GetValueOrDefault(request.HostId, long.MinValue))
        {
            _echoed[request.HostId] = request.LastGrantStamp;
            if (!IsEstablished && Count(map, long.MinValue) * 2 > map.Hosts.Length)
            {
                EstablishedAt = clock.GetTimestamp();
            }
        }
        return true;
    }

    /// <summary>Whether the host's generation was news enough to log: once per activation.</summary>
    public bool FirstNewerGeneration()
    {
        var first = !_warnedOfNewer;
        _warnedOfNewer = true;
        return first;
    }

    /// <summary>Whether a majority of the map's hosts echoed this activation within the witness window: it may grant without the database.</summary>
    public bool Witnessed(ClusterMap map) => map.Hosts.Length > 0 && Fresh(map) * 2 > map.Hosts.Length;

    /// <summary>How many of the map's hosts echoed this activation within the witness window.</summary>
    public int Fresh(ClusterMap map) => Count(map, clock.GetTimestamp() - Ticks(options.WitnessWindow));

    private int Count(ClusterMap map, long since) =>
        map.Hosts.Count(h => _echoed.TryGetValue(h.HostId, out var stamp) && stamp >= since);

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * clock.TimestampFrequency);
}
