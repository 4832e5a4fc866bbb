using OrleansStorage.Segments;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// Flushes that overlap writes (the Linux NBD client sends FLUSH with writes in flight): a flush
/// owes nothing to a write still in flight, and everything to one acknowledged before it started,
/// whatever runs beside it. Each race is held at its exact point by a seam, never by a sleep.
/// </summary>
public sealed class FlushRaceTests : IDisposable
{
    private const int Segment = 4 << 20;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-flush-race-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly SegmentAddress _segment = new(Guid.NewGuid(), 3);

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Fact]
    public async Task A_write_acknowledged_after_a_flush_that_ran_while_it_was_in_flight_is_made_durable_by_the_next_flush()
    {
        // The Linux NBD client sends FLUSH with writes in flight: a flush that starts after a
        // write was marked dirty but before its bytes reach the file must not mark the segment
        // clean, or the client's next flush syncs nothing and a power cut loses the write.
        var power = new PowerLossSimulator();
        var root = Path.Combine(_root, "flush-race");
        var written = new byte[4096];
        Array.Fill(written, (byte)0x5A);
        using (var store = new SegmentStore(root, failsFsync: path => power.FailsFsync("host", path)))
        {
            power.Baseline("host", store.VolumesRoot);
            await store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
            await store.FlushVolumeAsync(_segment.VolumeId); // the volume's first flush: everything known

            var (held, release) = HoldDataWrites(store);
            var write = store.WriteAsync(_segment, Segment, 0, written, durable: false).AsTask();
            await held; // marked dirty, bytes not written yet
            await store.FlushVolumeAsync(_segment.VolumeId); // a FLUSH that overlaps the write: it owes it nothing
            store.BeforeDataWrite = null;
            release.SetResult();
            await write; // acknowledged
            await store.FlushVolumeAsync(_segment.VolumeId); // issued after the write completed: it must cover it
            power.PowerOff("host");
        }
        power.RestoreAfterPowerLoss("host", Path.Combine(root, "volumes"));

        using var reopened = new SegmentStore(root);
        var back = new byte[4096];
        await reopened.ReadAsync(_segment, Segment, 0, back);
        Assert.True(back.AsSpan().SequenceEqual(written),
            $"a write acknowledged before an acknowledged flush was lost by a power cut: block reads 0x{back[0]:X2}, wrote 0x5A; fsyncs: {power.History("host", ".seg")}");
    }

    [Fact]
    public async Task A_durable_write_to_a_file_an_earlier_process_made_survives_a_power_cut()
    {
        // A process makes a segment file and is killed before any flush: the file's directory
        // entry is in the page cache only, which the kill does not lose. The next process writes
        // the segment with FUA: the write is acknowledged as durable, so its file's entry must be.
        var power = new PowerLossSimulator();
        var root = Path.Combine(_root, "fua-after-restart");
        var written = new byte[4096];
        Array.Fill(written, (byte)0x6B);
        var first = new SegmentStore(root, failsFsync: path => power.FailsFsync("host", path));
        power.Baseline("host", first.VolumesRoot);
        await first.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
        first.CrashOnDispose();
        first.Dispose(); // kill -9: no flush, no clean shutdown; the page cache keeps the file

        using (var second = new SegmentStore(root, failsFsync: path => power.FailsFsync("host", path)))
        {
            await second.WriteAsync(_segment, Segment, 0, written, durable: true); // acknowledged as durable
            power.PowerOff("host");
        }
        power.RestoreAfterPowerLoss("host", Path.Combine(root, "volumes"));

        using var reopened = new SegmentStore(root);
        var back = new byte[4096];
        await reopened.ReadAsync(_segment, Segment, 0, back);
        Assert.True(back.AsSpan().SequenceEqual(written),
            $"a FUA write to a file an earlier process made was lost by a power cut: block reads 0x{back[0]:X2}, wrote 0x6B; fsyncs: {power.History("host", "")}");
    }

    [Fact]
    public async Task A_flush_that_overlaps_a_write_in_flight_keeps_its_segments_intent_so_a_crash_leaves_it_suspect()
    {
        // Intents cleared at once after a flush: a flush that cleared the intent of a segment whose
        // write is still in flight would let a crash leave a half-written segment trusted.
        var root = Path.Combine(_root, "intent-race");
        var store = new SegmentStore(root, intentClearDelay: TimeSpan.Zero);
        await store.NextVersionAsync(_segment, epoch: 4);
        await store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false);
        await store.FlushVolumeAsync(_segment.VolumeId);

        var (held, release) = HoldDataWrites(store);
        await store.NextVersionAsync(_segment, epoch: 4);
        var write = store.WriteAsync(_segment, Segment, 0, new byte[4096], durable: false).AsTask();
        await held;
        await store.FlushVolumeAsync(_segment.VolumeId);
        await store.FlushVolumeAsync(_segment.VolumeId);

        // A crash while the write is still in flight: the store is opened again without its clean shutdown.
        using var reopened = new SegmentStore(root);
        var suspects = reopened.SuspectSegments.TryGetValue(_segment.VolumeId, out var marked) ? marked : [];
        Assert.True(suspects.Contains(_segment.SegmentIndex), "a segment with a write in flight lost its write intent to an overlapping flush");
        release.SetResult();
        await write;
    }

    [Fact]
    public async Task A_flush_that_started_after_a_new_files_write_was_acknowledged_makes_its_directory_entry_durable_even_while_another_flush_syncs_the_directory()
    {
        var power = new PowerLossSimulator();
        var root = Path.Combine(_root, "dir-race");
        var volume = Guid.NewGuid();
        var first = new SegmentAddress(volume, 0);
        var second = new SegmentAddress(volume, 1);
        string? volumeDirectory = null;
        var hold = false;
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var written = new byte[4096];
        Array.Fill(written, (byte)0x5A);
        var store = new SegmentStore(root, failsFsync: path =>
        {
            if (Volatile.Read(ref hold) && path == volumeDirectory)
            {
                held.Set();
                release.Wait();
            }
            return power.FailsFsync("host", path);
        });
        power.Baseline("host", store.VolumesRoot);
        volumeDirectory = Path.GetDirectoryName(store.SegmentPath(first));
        await store.WriteAsync(first, Segment, 0, new byte[4096], durable: false);
        await store.FlushVolumeAsync(volume); // first flush: everything

        await store.WriteAsync(second, Segment, 0, written, durable: false); // a new file; acknowledged
        Volatile.Write(ref hold, true);
        var other = Task.Run(() => store.FlushVolumeAsync(volume)); // someone else's flush takes the new entry...
        Assert.True(held.Wait(TimeSpan.FromSeconds(10)));
        Volatile.Write(ref hold, false);
        await store.FlushVolumeAsync(volume).WaitAsync(TimeSpan.FromSeconds(10)); // ...our flush, started after the ack, returns first
        power.PowerOff("host");
        release.Set();
        await other;
        store.Dispose();
        power.RestoreAfterPowerLoss("host", Path.Combine(root, "volumes"));

        using var reopened = new SegmentStore(root);
        var back = new byte[4096];
        await reopened.ReadAsync(second, Segment, 0, back);
        Assert.True(back.AsSpan().SequenceEqual(written),
            $"a write acknowledged before an acknowledged flush lost its file (directory entry) to a power cut: block reads 0x{back[0]:X2}; fsyncs: {power.History("host", ".seg")}");
    }

    [Fact]
    public async Task A_shutdown_with_a_write_in_flight_leaves_no_clean_shutdown_marker()
    {
        var root = Path.Combine(_root, "shutdown");
        var segment = new SegmentAddress(Guid.NewGuid(), 3);
        var store = new SegmentStore(root);
        await store.NextVersionAsync(segment, epoch: 4);
        await store.WriteAsync(segment, Segment, 0, new byte[4096], durable: false);
        await store.FlushVolumeAsync(segment.VolumeId);

        var (held, release) = HoldDataWrites(store);
        var version = await store.NextVersionAsync(segment, epoch: 4);
        var write = store.WriteAsync(segment, Segment, 0, new byte[4096], durable: false).AsTask();
        await held;
        store.Dispose(); // the host stops with the write in flight
        var marker = File.Exists(Path.Combine(store.VolumesRoot, SegmentStore.CleanShutdownFileName));
        using var reopened = new SegmentStore(root);
        var suspect = reopened.SuspectSegments.TryGetValue(segment.VolumeId, out var marked) && marked.Contains(segment.SegmentIndex);
        Assert.True(!marker || suspect,
            $"clean-shutdown marker written with a write in flight: version {reopened.Version(segment):X} (the in-flight write's {version:X}) trusted, segment not suspect");
        release.SetResult();
        await Record.ExceptionAsync(() => write); // it ends on a disposed store: how is not the point
    }

    [Fact]
    public async Task A_version_handed_out_for_a_write_still_in_flight_keeps_its_intent_through_flushes()
    {
        // The primary takes a version, then writes locally; the local write can be held up for a
        // long time (its partial block found corrupt and fetched from a replica that does not
        // answer) while the replicas applied the write at that version. Flushes meanwhile must
        // neither call the segment clean nor clear its intent: a crash would leave the version
        // trusted over data that never got it.
        var root = Path.Combine(_root, "version-ahead");
        var segment = new SegmentAddress(Guid.NewGuid(), 3);
        var store = new SegmentStore(root, intentClearDelay: TimeSpan.Zero);
        await store.NextVersionAsync(segment, epoch: 4);
        await store.WriteAsync(segment, Segment, 0, new byte[4096], durable: false);
        await store.FlushVolumeAsync(segment.VolumeId);

        using (await store.BeginChangeAsync(segment)) // as the primary's write does, from its version to its end
        {
            var version = await store.NextVersionAsync(segment, epoch: 4); // its data not written yet
            await store.FlushVolumeAsync(segment.VolumeId);
            await store.FlushVolumeAsync(segment.VolumeId);

            using var reopened = new SegmentStore(root); // a crash: reopened without a clean shutdown
            var suspect = reopened.SuspectSegments.TryGetValue(segment.VolumeId, out var marked) && marked.Contains(segment.SegmentIndex);
            Assert.True(suspect, $"version {reopened.Version(segment):X} (handed out {version:X}) survives as trusted though its write never landed");
        }
    }

    /// <summary>Holds every data write of <paramref name="store"/> between its dirty mark and its bytes; <c>held</c> completes when the first arrives there.</summary>
    private static (Task Held, TaskCompletionSource Release) HoldDataWrites(SegmentStore store)
    {
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        store.BeforeDataWrite = async _ =>
        {
            held.TrySetResult();
            await release.Task;
        };
        return (held.Task, release);
    }
}
