using OrleansStorage.Segments;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// A storage server that stops before it could have a segment's replicas resynced (what they
/// missed lived only in its memory) has the store keep the segment suspect: for the next
/// activation in this process, and after a restart, however cleanly the store was closed.
/// </summary>
public sealed class KeptSuspectSegmentsTests : IDisposable
{
    private const int Segment = 4 << 20;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-kept-suspect-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly SegmentAddress _segment = new(Guid.NewGuid(), 3);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task A_segment_kept_suspect_is_suspect_at_once_and_after_a_clean_shutdown()
    {
        // Intents cleared at once after a flush: only the kept one can survive it.
        using (var store = new SegmentStore(_root, intentClearDelay: TimeSpan.Zero))
        {
            await store.NextVersionAsync(_segment, epoch: 4);
            await store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
            await store.FlushVolumeAsync(_segment.VolumeId);

            await store.KeepSuspectAsync(_segment);
            Assert.Equal([_segment.SegmentIndex], store.SuspectSegments[_segment.VolumeId]);
            await store.FlushVolumeAsync(_segment.VolumeId);
        }

        using var reopened = new SegmentStore(_root);
        var suspects = Assert.Single(reopened.SuspectSegments);
        Assert.Equal([_segment.SegmentIndex], suspects.Value);
        Assert.Equal(SegmentVersions.Unknown, reopened.Version(_segment));
    }
}
