using OrleansStorage.Segments;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// A snapshot's copy cut short by a crash (issue 28, hole 3): after the host comes back, the
/// snapshot must still read what the volume held when it was taken, never a copy with extents
/// missing that copy-on-write takes as finished.
/// </summary>
public sealed class SnapshotCopyCrashTests : IDisposable
{
    private const int Segment = 4 << 20;
    private const string Host = "host";
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-copycrash-test-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly PowerLossSimulator _power = new();
    private readonly SegmentAddress _segment = new(Guid.NewGuid(), 3);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <param name="headSuspect">
    /// Whether the head's write intent was still set at the crash (it is for 5 s after a flush):
    /// then the head is suspect after the crash, and as the primary takes the epoch's repair
    /// version before it serves writes, which its new copy carries. Its data is what it held at the
    /// snapshot either way: the write that follows a copy waits for the copy.
    /// </param>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_copy_cut_short_by_a_power_loss_is_made_again_from_the_head_and_the_snapshot_reads_what_it_held(bool headSuspect)
    {
        var snapshot = new SnapshotNamespace(Guid.NewGuid(), _segment.VolumeId, Epoch: 5);
        var copy = new SegmentAddress(snapshot.SnapshotId, _segment.SegmentIndex);
        var held = new byte[Segment];
        long versionAtSnapshot;
        var intentClearDelay = headSuspect ? SegmentStore.DefaultIntentClearDelay : TimeSpan.Zero;
        using (var store = new SegmentStore(_root, failsFsync: CutsPowerAtTheCopysFirstFsync(snapshot), intentClearDelay: intentClearDelay))
        {
            _power.Baseline(Host, store.VolumesRoot);
            // Three extents with holes between them, flushed: the head is durable before the snapshot.
            foreach (var offset in new[] { 0, 1 << 20, 3 << 20 })
            {
                var extent = Replicas.RandomBytes(256 << 10, seed: offset + 1);
                extent.CopyTo(held, offset);
                await store.NextVersionAsync(_segment, epoch: 4);
                await store.WriteAsync(_segment, Segment, offset, extent, durable: false);
            }
            await store.FlushVolumeAsync(_segment.VolumeId);
            versionAtSnapshot = store.Version(_segment);
            if (!headSuspect)
            {
                // The flush cleared the head's intent without an fsync; a first write to another
                // segment fsyncs the intents and makes that clear durable.
                await store.WriteAsync(_segment with { SegmentIndex = 4 }, Segment, 0, new byte[] { 1 }, durable: false);
            }

            // The first write after the snapshot copies the segment; the power goes out in the middle
            // of that copy, so the write that waits for it never happens.
            await store.PreserveAsync(_segment, snapshot, Segment);
        }
        _power.RestoreAfterPowerLoss(Host, Path.Combine(_root, "volumes"));

        using var reopened = new SegmentStore(_root);
        Assert.Equal(headSuspect, reopened.SuspectSegments.TryGetValue(_segment.VolumeId, out var suspects) && suspects.Contains(_segment.SegmentIndex));
        if (headSuspect)
        {
            await reopened.MarkForRepairAsync(_segment, epoch: 6); // as RepairSuspectSegmentsAsync does on the primary
        }
        var headVersion = reopened.Version(_segment);
        Assert.Equal(headSuspect ? SegmentVersions.RepairVersionOf(6) : versionAtSnapshot, headVersion);
        // The write is sent again: its copy-on-write comes first, then the write itself.
        await reopened.PreserveAsync(_segment, snapshot, Segment);
        await reopened.NextVersionAsync(_segment, epoch: 7);
        await reopened.WriteAsync(_segment, Segment, 0, Replicas.RandomBytes(Segment, seed: 99), durable: true);

        var read = new byte[Segment];
        await reopened.ReadAsync(copy, Segment, 0, read);
        var firstWrong = FirstDifference(held, read);
        if (firstWrong >= 0)
        {
            Assert.Fail($"the snapshot's copy differs from what the segment held at the snapshot from byte {firstWrong} (held {held[firstWrong]}, read {read[firstWrong]}); copy version {Describe(reopened.Version(copy))}; {_power.History(Host, ".seg")}");
        }
        Assert.Equal(headVersion, reopened.Version(copy));
    }

    [Fact]
    public async Task A_copy_replaced_by_a_resync_is_whole_old_or_whole_new_and_unknown_until_its_new_version_is_durable()
    {
        var snapshot = new SnapshotNamespace(Guid.NewGuid(), _segment.VolumeId, Epoch: 5);
        var copy = new SegmentAddress(snapshot.SnapshotId, _segment.SegmentIndex);
        var old = Replicas.RandomBytes(1 << 20, seed: 1);
        var sent = Replicas.RandomBytes(1 << 20, seed: 2);
        using (var store = new SegmentStore(_root, failsFsync: path => _power.FailsFsync(Host, path)))
        {
            _power.Baseline(Host, store.VolumesRoot);
            await store.InstallSnapshotCopyAsync(copy, snapshot, Segment, [new DataExtent(0, old.Length)], old, version: 7);
            // The resync's copy lands in page cache only: the power goes out before any of its fsyncs.
            _power.PowerOff(Host);
            await store.InstallSnapshotCopyAsync(copy, snapshot, Segment, [new DataExtent(0, sent.Length)], sent, version: 8);
        }
        _power.RestoreAfterPowerLoss(Host, Path.Combine(_root, "volumes"));

        using var reopened = new SegmentStore(_root);
        var read = new byte[old.Length];
        await reopened.ReadAsync(copy, Segment, 0, read);
        Assert.True(read.AsSpan().SequenceEqual(old), "a resync cut short left neither the old copy nor the new one");
        Assert.Equal(7, reopened.Version(copy));
    }

    /// <summary>
    /// The store's fsyncs go to the simulator; at the first fsync of the copy's files, another copy
    /// into the same snapshot has just fsynced the directory (the copy's entries are durable), and
    /// the power goes out before this fsync: the copy's data never reaches the disk.
    /// </summary>
    private Func<string, bool> CutsPowerAtTheCopysFirstFsync(SnapshotNamespace snapshot)
    {
        var gate = new Lock();
        var cut = false;
        var copyName = _segment.SegmentIndex.ToString("D10", System.Globalization.CultureInfo.InvariantCulture);
        return path =>
        {
            lock (gate)
            {
                var directory = Path.GetDirectoryName(path) ?? "";
                if (!cut && Path.GetFileName(directory) == snapshot.SnapshotId.ToString("N") && Path.GetFileName(path).StartsWith(copyName, StringComparison.Ordinal))
                {
                    _power.FailsFsync(Host, directory);
                    _power.PowerOff(Host);
                    cut = true;
                }
                return _power.FailsFsync(Host, path);
            }
        };
    }

    private static int FirstDifference(byte[] expected, byte[] actual)
    {
        var common = expected.AsSpan().CommonPrefixLength(actual);
        return common == expected.Length ? -1 : common;
    }

    private static string Describe(long version) => version == SegmentVersions.Unknown ? "unknown" : version.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
