using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// Seams for tests that must hold one side of a race at an exact point, or crash a host inside
/// their own process (garnet keeps its epoch machinery's hooks in a file of their own too).
/// Production never sets them.
/// </summary>
public sealed partial class SegmentStore
{
    private volatile bool _crashOnDispose;

    /// <summary>
    /// Awaited by every data write after the segment is marked dirty and before its bytes are
    /// written: a test holds a write there to run a flush, a snapshot or a crash in between.
    /// </summary>
    internal Func<SegmentAddress, ValueTask>? BeforeDataWrite { get; set; }

    /// <summary>
    /// The host is being killed, not stopped: <see cref="Dispose"/> then closes the store's files
    /// but neither flushes nor writes the clean-shutdown marker, so the next open takes the
    /// unclean-shutdown path (suspect segments) as after a real crash. What already reached the
    /// files stays, as a killed process's page cache does. A silo killed in a test process
    /// (TestingHost's KillSiloAsync) still disposes its services, and so this store.
    /// </summary>
    public void CrashOnDispose() => _crashOnDispose = true;
}
