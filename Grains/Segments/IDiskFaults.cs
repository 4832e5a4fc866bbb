namespace OrleansStorage.Segments;

/// <summary>
/// Sees every fsync a host's segment store is about to make (the path of a file or directory) and
/// decides whether it fails, as a dying disk's would. Production never fails one; tests fail them
/// to prove fail-stop, and record them to simulate a power loss (what was never fsynced is lost).
/// </summary>
public interface IDiskFaults
{
    bool FailsFsync(string hostId, string path);
}

public sealed class NoDiskFaults : IDiskFaults
{
    public bool FailsFsync(string hostId, string path) => false;
}
