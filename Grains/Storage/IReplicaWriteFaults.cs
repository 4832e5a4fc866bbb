using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

/// <summary>How a replica answers a forwarded write when a test makes it fail (production: never).</summary>
public enum ReplicaWriteFault
{
    None,

    /// <summary>An I/O error before the write is applied.</summary>
    Fail,

    /// <summary>Refused as a replica whose map moved on refuses it: a stale epoch.</summary>
    RefuseAsStale,

    /// <summary>Refused as a replica that holds no copy of the group refuses it: misdirected.</summary>
    RefuseAsMisdirected,
}

/// <summary>
/// Faults of forwarded writes and fills, injected by tests; production has none. A replica can
/// fail a forwarded write before applying it, or refuse it as a map disagreement (to prove the
/// primary has it resynced and never lets it look equal), or hold it after admission and before
/// it takes the segment's write turn, as a slow network would (to prove a forward that lost a
/// race with a map change and a copy is rejected, never applied). A primary filling a replica can
/// be held before it goes over one segment (to put writes and snapshots at a chosen point of a fill).
/// </summary>
public interface IReplicaWriteFaults
{
    ReplicaWriteFault NextFault(string hostId);

    ValueTask BeforeWriteTurnAsync(string hostId, SegmentAddress segment);

    ValueTask BeforeFillSegmentAsync(string sourceHostId, SegmentAddress segment);
}

public sealed class NoReplicaWriteFaults : IReplicaWriteFaults
{
    public ReplicaWriteFault NextFault(string hostId) => ReplicaWriteFault.None;

    public ValueTask BeforeWriteTurnAsync(string hostId, SegmentAddress segment) => ValueTask.CompletedTask;

    public ValueTask BeforeFillSegmentAsync(string sourceHostId, SegmentAddress segment) => ValueTask.CompletedTask;
}
