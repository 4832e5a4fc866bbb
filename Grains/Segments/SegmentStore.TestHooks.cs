using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// Seams for tests that must hold one side of a race at an exact point (garnet keeps its epoch
/// machinery's hooks in a file of their own too). Production never sets them.
/// </summary>
public sealed partial class SegmentStore
{
    /// <summary>
    /// Awaited by every data write after the segment is marked dirty and before its bytes are
    /// written: a test holds a write there to run a flush, a snapshot or a crash in between.
    /// </summary>
    internal Func<SegmentAddress, ValueTask>? BeforeDataWrite { get; set; }
}
