namespace OrleansStorage.Segments;

/// <summary>
/// Decides whether a host's next fsync fails, as a dying disk's would. Production never does;
/// tests make a host's disk fail to prove the host stops serving and is refilled from its peers.
/// </summary>
public interface IDiskFaults
{
    bool FailsFsync(string hostId);
}

public sealed class NoDiskFaults : IDiskFaults
{
    public bool FailsFsync(string hostId) => false;
}
