using OrleansStorage.Errors;
using OrleansStorage.Segments;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class SegmentStoreTests : IDisposable
{
    private const int Segment = 4 << 20;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-store-test-" + Guid.NewGuid().ToString("N")[..8]);
    private SegmentStore _store;
    private readonly SegmentAddress _segment = new(Guid.NewGuid(), 3);

    public SegmentStoreTests() => _store = new SegmentStore(_root);

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public async Task The_first_flush_after_a_restart_syncs_every_segment_written_before_it()
    {
        var volume = Guid.NewGuid();
        await _store.WriteAsync(new SegmentAddress(volume, 1), Segment, 0, new byte[4096], durable: false);
        await _store.WriteAsync(new SegmentAddress(volume, 2), Segment, 0, new byte[4096], durable: false);
        _store.Dispose(); // a restart: what was written but not flushed is not known any more

        var synced = new List<string>();
        using var reopened = new SegmentStore(_root, failsFsync: path =>
        {
            lock (synced)
            {
                synced.Add(path);
            }
            return false;
        });
        await reopened.FlushVolumeAsync(volume);
        Assert.Contains(reopened.SegmentPath(new SegmentAddress(volume, 1)), synced);
        Assert.Contains(reopened.SegmentPath(new SegmentAddress(volume, 2)), synced);

        synced.Clear();
        await reopened.FlushVolumeAsync(volume); // nothing written since: no segment to sync again
        Assert.DoesNotContain(synced, path => path.EndsWith(".seg", StringComparison.Ordinal));
    }

    [Fact]
    public async Task After_a_failed_fsync_the_store_refuses_everything_even_when_fsync_works_again()
    {
        var failing = false;
        using var store = new SegmentStore(Path.Combine(_root, "failing"), failsFsync: _ => failing);
        failing = true;
        string? reported = null;
        store.Failed += reason => reported = reason;
        await Assert.ThrowsAsync<DiskFailedException>(() => store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: true).AsTask());
        Assert.NotNull(reported);

        failing = false;
        await Assert.ThrowsAsync<DiskFailedException>(() => store.FlushVolumeAsync(_segment.VolumeId));
        await Assert.ThrowsAsync<DiskFailedException>(() => store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false).AsTask());
        await Assert.ThrowsAsync<DiskFailedException>(() => store.ReadAsync(_segment, Segment, 0, new byte[4096]).AsTask());
    }

    [Fact]
    public async Task Never_written_segments_read_as_zeros_and_create_no_file()
    {
        var buffer = new byte[8192];
        Array.Fill(buffer, (byte)0xAA);
        await _store.ReadAsync(_segment, Segment, 1000, buffer);
        Assert.All(buffer, b => Assert.Equal(0, b));
        Assert.False(File.Exists(_store.SegmentPath(_segment)));
    }

    [Fact]
    public async Task Writes_are_sparse_and_holes_read_as_zeros()
    {
        var data = Enumerable.Range(0, 4096).Select(i => (byte)(i % 255 + 1)).ToArray();
        await _store.WriteAsync(_segment, Segment, Segment - 4096, data, durable: true);

        var (bytesUsed, files) = _store.Usage();
        Assert.Equal(1, files);
        Assert.True(bytesUsed < Segment / 4, $"a 4 KiB write at the end of a 4 MiB segment allocated {bytesUsed} bytes");
        var hole = new byte[1 << 20];
        await _store.ReadAsync(_segment, Segment, 0, hole);
        Assert.All(hole, b => Assert.Equal(0, b));
        var back = new byte[4096];
        await _store.ReadAsync(_segment, Segment, Segment - 4096, back);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task Reads_past_the_written_end_of_the_file_are_zero_filled()
    {
        await _store.WriteAsync(_segment, Segment, 0, new byte[] { 1, 2, 3 }, durable: false);
        var back = new byte[10];
        await _store.ReadAsync(_segment, Segment, 0, back);
        Assert.Equal(new byte[] { 1, 2, 3, 0, 0, 0, 0, 0, 0, 0 }, back);
    }

    [Theory]
    [InlineData(-1, 10)]
    [InlineData(Segment - 10, 11)]
    [InlineData(Segment, 1)]
    public async Task Ranges_outside_the_segment_are_rejected_and_write_nothing(int offset, int length)
    {
        await Assert.ThrowsAsync<InvalidRequestException>(() => _store.WriteAsync(_segment, Segment, offset, new byte[length], durable: false).AsTask());
        await Assert.ThrowsAsync<InvalidRequestException>(() => _store.ReadAsync(_segment, Segment, offset, new byte[length]).AsTask());
        Assert.False(File.Exists(_store.SegmentPath(_segment)));
    }

    [Fact]
    public async Task Trim_reads_as_zeros_and_frees_space()
    {
        var data = new byte[Segment];
        new Random(1).NextBytes(data);
        await _store.WriteAsync(_segment, Segment, 0, data, durable: true);
        var before = _store.Usage().BytesUsed;

        await _store.TrimAsync(_segment, Segment, 1 << 20, 2 << 20);

        var back = new byte[Segment];
        await _store.ReadAsync(_segment, Segment, 0, back);
        Array.Clear(data, 1 << 20, 2 << 20);
        Assert.Equal(data, back);
        Assert.True(_store.Usage().BytesUsed <= before - (1 << 20), "trim should punch a hole");
    }

    [Fact]
    public async Task Data_survives_reopening_the_store()
    {
        var data = new byte[] { 9, 8, 7 };
        await _store.WriteAsync(_segment, Segment, 77, data, durable: true);
        await _store.FlushVolumeAsync(_segment.VolumeId);
        using var reopened = new SegmentStore(_root);
        var back = new byte[3];
        await reopened.ReadAsync(_segment, Segment, 77, back);
        Assert.Equal(data, back);
        Assert.Contains(_segment.VolumeId, reopened.ListVolumes());
    }

    [Fact]
    public async Task Delete_volume_removes_its_files_only()
    {
        var other = new SegmentAddress(Guid.NewGuid(), 0);
        await _store.WriteAsync(_segment, Segment, 0, new byte[] { 1 }, durable: false);
        await _store.WriteAsync(other, Segment, 0, new byte[] { 2 }, durable: false);
        _store.DeleteVolume(_segment.VolumeId);
        Assert.False(File.Exists(_store.SegmentPath(_segment)));
        Assert.True(File.Exists(_store.SegmentPath(other)));
        var back = new byte[1];
        await _store.ReadAsync(_segment, Segment, 0, back);
        Assert.Equal(0, back[0]);
    }

    [Fact]
    public async Task Open_handles_stay_bounded_while_every_segment_keeps_its_data()
    {
        using var store = new SegmentStore(Path.Combine(_root, "bounded"), maxOpenSegments: 8);
        var volume = Guid.NewGuid();
        for (var i = 0; i < 40; i++)
        {
            await store.WriteAsync(new SegmentAddress(volume, i), Segment, 4096 * i, new[] { (byte)(i + 1) }, durable: false);
            Assert.True(store.OpenSegmentCount <= 8, $"{store.OpenSegmentCount} handles open, the bound is 8");
        }
        // Concurrent I/O on more segments than the bound: leased handles are never closed under it.
        await Task.WhenAll(Enumerable.Range(0, 40).Select(async i =>
        {
            var back = new byte[1];
            await store.ReadAsync(new SegmentAddress(volume, i), Segment, 4096 * i, back);
            Assert.Equal((byte)(i + 1), back[0]);
        }));
        Assert.Equal(40, store.DirtySegmentCount(volume));
        await store.FlushVolumeAsync(volume); // reopens the evicted ones to fsync them
        Assert.Equal(0, store.DirtySegmentCount(volume));
        Assert.True(store.OpenSegmentCount <= 8);
    }

    [Fact]
    public void Segment_paths_are_built_from_the_volume_guid_and_number_only()
    {
        var path = _store.SegmentPath(new SegmentAddress(Guid.Parse("0f8fad5b-d9cb-469f-a165-70867728950e"), 12));
        Assert.Equal(Path.Combine(_store.VolumesRoot, "0f8fad5bd9cb469fa16570867728950e", "0000000012.seg"), path);
    }

    [Fact]
    public async Task Write_versions_rise_per_epoch_keep_the_highest_on_replicas_and_survive_a_restart()
    {
        var first = await _store.NextVersionAsync(_segment, epoch: 7);
        Assert.Equal(7L << 32, first);
        Assert.Equal(first + 1, await _store.NextVersionAsync(_segment, epoch: 7));
        // A later primary (epoch 9) never reuses a version an earlier one handed out.
        Assert.Equal(9L << 32, await _store.NextVersionAsync(_segment, epoch: 9));

        var replica = new SegmentAddress(_segment.VolumeId, 40);
        _store.RaiseVersion(replica, 12);
        _store.RaiseVersion(replica, 5); // applied out of order: the highest stays
        Assert.Equal(12, _store.Version(replica));
        Assert.Equal(0, _store.Version(new SegmentAddress(_segment.VolumeId, 41)));

        _store.Dispose();
        using var reopened = new SegmentStore(_root);
        Assert.Equal(9L << 32, reopened.Version(_segment));
        Assert.Equal(12, reopened.Version(replica));
    }

    [Fact]
    public async Task A_segment_image_copies_data_and_holes_and_replaces_what_was_there()
    {
        var data = Enumerable.Range(0, 8192).Select(i => (byte)(i % 251 + 1)).ToArray();
        await _store.WriteAsync(_segment, Segment, 4096, data, durable: false);
        await _store.WriteAsync(_segment, Segment, 1 << 20, data, durable: false);
        var (extents, bytes) = await _store.ReadImageAsync(_segment, Segment);
        Assert.Equal(2 * data.Length, bytes.Length);

        var target = new SegmentAddress(_segment.VolumeId, 9);
        await _store.WriteAsync(target, Segment, 3 << 20, data, durable: false); // stale data the image must erase
        await _store.InstallImageAsync(target, Segment, extents, bytes, version: 77);

        var source = new byte[Segment];
        var copy = new byte[Segment];
        await _store.ReadAsync(_segment, Segment, 0, source);
        await _store.ReadAsync(target, Segment, 0, copy);
        Assert.True(source.AsSpan().SequenceEqual(copy));
        Assert.Equal(77, _store.Version(target));
        await Assert.ThrowsAsync<InvalidRequestException>(() => _store.InstallImageAsync(target, Segment, extents, bytes.AsMemory(1), 78));
    }

    [Fact]
    public async Task Deleting_segments_removes_their_files_and_versions_only()
    {
        var data = new byte[4096];
        data[0] = 1;
        for (var i = 0; i < 6; i++)
        {
            var segment = new SegmentAddress(_segment.VolumeId, i);
            await _store.WriteAsync(segment, Segment, 0, data, durable: false);
            await _store.NextVersionAsync(segment, epoch: 1);
        }
        Assert.Equal(3, _store.DeleteSegments(_segment.VolumeId, index => index % 2 == 1));
        Assert.Equal([0L, 2L, 4L], _store.ListSegments(_segment.VolumeId).Order());
        Assert.Equal(0, _store.Version(new SegmentAddress(_segment.VolumeId, 1)));
        Assert.NotEqual(0, _store.Version(new SegmentAddress(_segment.VolumeId, 2)));
    }

    [Fact]
    public async Task Versions_of_an_epoch_never_run_into_the_next_epoch()
    {
        await _store.InstallImageAsync(_segment, Segment, [], ReadOnlyMemory<byte>.Empty, version: (7L << 32) + uint.MaxValue - 1);
        await Assert.ThrowsAsync<StorageException>(() => _store.NextVersionAsync(_segment, epoch: 7).AsTask());
        Assert.Equal(8L << 32, await _store.NextVersionAsync(_segment, epoch: 8));
    }

    [Fact]
    public async Task A_segment_written_again_soon_after_a_flush_keeps_its_intent_without_a_new_fsync_until_it_stays_clean()
    {
        var intentSyncs = 0;
        var root = Path.Combine(_root, "lazy");
        using (var store = new SegmentStore(root, failsFsync: path =>
        {
            if (path.EndsWith(WriteIntents.FileName, StringComparison.Ordinal))
            {
                Interlocked.Increment(ref intentSyncs);
            }
            return false;
        }, intentClearDelay: TimeSpan.FromMilliseconds(300)))
        {
            // A database's pattern: write, flush, write the same segment again, flush ...
            for (var commit = 0; commit < 5; commit++)
            {
                await store.NextVersionAsync(_segment, epoch: 4);
                await store.WriteAsync(_segment, Segment, commit * 4096, new byte[4096], durable: false);
                await store.FlushVolumeAsync(_segment.VolumeId);
            }
            Assert.Equal(1, intentSyncs); // marked once, kept across the flushes

            await Task.Delay(400);
            await store.FlushVolumeAsync(_segment.VolumeId); // clean for longer than the delay: cleared now
            await store.NextVersionAsync(_segment, epoch: 4);
            await store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
            Assert.Equal(2, intentSyncs); // a first write after a settled flush marks again
        }
    }

    [Fact]
    public async Task After_an_unclean_shutdown_segments_with_unflushed_writes_are_suspect_and_lose_their_versions()
    {
        // Intents cleared at once after a flush: which segments are suspect is then exact.
        _store.Dispose();
        _store = new SegmentStore(_root, intentClearDelay: TimeSpan.Zero);
        var flushed = new SegmentAddress(_segment.VolumeId, 1);
        var unflushed = new SegmentAddress(_segment.VolumeId, 2);
        var durableOnly = new SegmentAddress(_segment.VolumeId, 3);
        foreach (var segment in new[] { flushed, unflushed, durableOnly })
        {
            await _store.NextVersionAsync(segment, epoch: 4);
            await _store.WriteAsync(segment, Segment, 0, new byte[4096], durable: segment == durableOnly);
        }
        await _store.FlushVolumeAsync(_segment.VolumeId);
        await _store.NextVersionAsync(unflushed, epoch: 4);
        await _store.WriteAsync(unflushed, Segment, 0, new byte[4096], durable: false);
        await _store.NextVersionAsync(durableOnly, epoch: 4);
        await _store.WriteAsync(durableOnly, Segment, 0, new byte[4096], durable: true); // FUA, but no flush: its version is not durable

        // A crash: the store is opened again without its clean shutdown.
        using var reopened = new SegmentStore(_root);
        var suspects = Assert.Single(reopened.SuspectSegments);
        Assert.Equal(_segment.VolumeId, suspects.Key);
        Assert.Equal([2L, 3L], suspects.Value.Order());
        Assert.Equal(4L << 32, reopened.Version(flushed));
        Assert.Equal(SegmentVersions.Unknown, reopened.Version(unflushed));
        Assert.Equal(SegmentVersions.Unknown, reopened.Version(durableOnly));
    }

    [Fact]
    public async Task A_suspect_segment_stays_unknown_through_forwarded_writes_until_a_copy_installs_it()
    {
        await _store.NextVersionAsync(_segment, epoch: 4);
        await _store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
        using var reopened = new SegmentStore(_root); // a crash: the segment is suspect

        // A forwarded write reaches the replica before its resync: it is applied, but its version
        // must not make the rest of the segment, which the crash may have lost, look current.
        await reopened.WriteAsync(_segment, Segment, 0, new byte[] { 9 }, durable: false);
        reopened.RaiseVersion(_segment, (5L << 32) + 1);
        Assert.Equal(SegmentVersions.Unknown, reopened.Version(_segment));

        await reopened.InstallImageAsync(_segment, Segment, [new DataExtent(0, 1)], new byte[] { 9 }, (5L << 32) + 1);
        Assert.Equal((5L << 32) + 1, reopened.Version(_segment));
    }

    [Fact]
    public async Task A_volume_directory_first_made_by_a_replica_version_survives_a_power_loss_with_its_flushed_data()
    {
        // A replica's first change to a volume can be a version alone (a trim of a segment it holds
        // no file of): that creates the volume's directory before any data file does.
        var power = new Infrastructure.PowerLossSimulator();
        var root = Path.Combine(_root, "power");
        using (var first = new SegmentStore(root, failsFsync: path => power.FailsFsync("host", path)))
        {
            power.Baseline("host", first.VolumesRoot);
            first.RaiseVersion(new SegmentAddress(_segment.VolumeId, 1), 4L << 32);
            await first.WriteAsync(_segment, Segment, 0, new byte[] { 1, 2, 3 }, durable: false);
            await first.FlushVolumeAsync(_segment.VolumeId);
            power.PowerOff("host");
        }
        power.RestoreAfterPowerLoss("host", Path.Combine(root, "volumes"));

        using var reopened = new SegmentStore(root);
        var back = new byte[3];
        await reopened.ReadAsync(_segment, Segment, 0, back);
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
    }

    [Fact]
    public async Task A_clean_shutdown_leaves_nothing_suspect()
    {
        await _store.NextVersionAsync(_segment, epoch: 4);
        await _store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
        _store.Dispose();
        using var reopened = new SegmentStore(_root);
        Assert.Empty(reopened.SuspectSegments);
        Assert.Equal(4L << 32, reopened.Version(_segment));
        // The marker is gone at open: a crash from now on is unclean again.
        Assert.False(File.Exists(Path.Combine(reopened.VolumesRoot, SegmentStore.CleanShutdownFileName)));
    }
}
