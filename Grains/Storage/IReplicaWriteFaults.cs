using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

/// <summary>
/// Faults of forwarded writes, injected by tests; production has none. A replica can fail a
/// forwarded write before applying it (to prove the primary has it resynced), or hold it after
/// admission and before it takes the segment's write turn, as a slow network would (to prove a
/// forward that lost a race with a map change and a copy is rejected, never applied).
/// </summary>
public interface IReplicaWriteFaults
{
    bool ShouldFail(string hostId);

    ValueTask BeforeWriteTurnAsync(string hostId, SegmentAddress segment);
}

public sealed class NoReplicaWriteFaults : IReplicaWriteFaults
{
    public bool ShouldFail(string hostId) => false;

    public ValueTask BeforeWriteTurnAsync(string hostId, SegmentAddress segment) => ValueTask.CompletedTask;
}
