using OrleansStorage.Maps;

namespace OrleansStorage.Management;

/// <summary>
/// When the management service last proved that its map is the one the database holds (a read
/// that found the stored ETag its own, or its own write), and so whether it may still answer for
/// it. Another activation can replace the map only through the database: a map proved current at
/// time t is current at t, and an activation that cannot reach the database (cut off from it by a
/// partition, while clients still reach it) stops answering <see cref="Limit"/> after its last
/// proof instead of handing out an old map for as long as the partition lasts (issue 28, hole 7).
/// </summary>
public sealed class MapConfirmation(TimeProvider clock, TimeSpan limit)
{
    private long _provedAt = long.MinValue;

    /// <summary>How long an answer may rest on the last proof: a database blip shorter than this costs nothing.</summary>
    public TimeSpan Limit { get; } = limit;

    /// <summary>When a proof should be sought even though nothing else asked the database (a quarter of the limit: three tries before it runs out).</summary>
    public bool IsDue => Age >= Limit / 4;

    /// <summary>Since the last proof; <see cref="TimeSpan.MaxValue"/> before the first.</summary>
    public TimeSpan Age
    {
        get
        {
            var provedAt = Interlocked.Read(ref _provedAt);
            return provedAt == long.MinValue ? TimeSpan.MaxValue : clock.GetElapsedTime(provedAt);
        }
    }

    /// <summary>A moment at which a proof may start: the proof counts from there (the database answered later, never earlier).</summary>
    public long Start() => clock.GetTimestamp();

    /// <summary>The database showed the map as this activation's in a read or write that started at <paramref name="startedAt"/>.</summary>
    public void Proved(long startedAt)
    {
        var seen = Interlocked.Read(ref _provedAt);
        while (startedAt > seen)
        {
            var previous = Interlocked.CompareExchange(ref _provedAt, startedAt, seen);
            if (previous == seen)
            {
                return;
            }
            seen = previous;
        }
    }

    /// <summary>Why this activation must not answer for <paramref name="map"/> now; null while its last proof is recent enough.</summary>
    public string? Refusal(ClusterMap map, string where)
    {
        var age = Age;
        if (age <= Limit)
        {
            return null;
        }
        var since = age == TimeSpan.MaxValue ? "never reached the database" : $"has not reached the database for {age.TotalSeconds:0.0} s";
        return $"the activation on {where} {since} (the limit is {Limit.TotalSeconds:0.#} s): another may have replaced its map at epoch {map.Epoch}; ask through another gateway";
    }
}
