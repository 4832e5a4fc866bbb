namespace OrleansStorage.Storage;

/// <summary>
/// Decides whether a replica fails a forwarded write before applying it. Production never does;
/// tests make a live replica miss writes on purpose, to prove the primary has it resynced.
/// </summary>
public interface IReplicaWriteFaults
{
    bool ShouldFail(string hostId);
}

public sealed class NoReplicaWriteFaults : IReplicaWriteFaults
{
    public bool ShouldFail(string hostId) => false;
}
