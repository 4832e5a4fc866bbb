namespace OrleansStorage.Segments;

/// <summary>Hooks for tests that crash a host inside their own process, apart as garnet keeps its epoch test hooks.</summary>
public sealed partial class SegmentStore
{
    private volatile bool _crashOnDispose;

    /// <summary>
    /// The host is being killed, not stopped: <see cref="Dispose"/> then closes the store's files
    /// but neither flushes nor writes the clean-shutdown marker, so the next open takes the
    /// unclean-shutdown path (suspect segments) as after a real crash. What already reached the
    /// files stays, as a killed process's page cache does. A silo killed in a test process
    /// (TestingHost's KillSiloAsync) still disposes its services, and so this store.
    /// </summary>
    public void CrashOnDispose() => _crashOnDispose = true;
}
