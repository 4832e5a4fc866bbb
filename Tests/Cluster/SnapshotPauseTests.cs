using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// The pause of a volume's writers around each snapshot (docs/snapshots.md): it belongs to the
/// create that asked for it, so one create cannot end another's; and after a management failover
/// no snapshot is committed before every writer registered earlier can be paused. Each writer here
/// is a <see cref="RecordingWriterObserver"/> registered by the test, so its renewals are the
/// test's to make. The map's writes pass a <see cref="MapWriteGate"/>: a held one keeps a create
/// mid-commit; a failed one deactivates management, the next call starting a new activation.
/// </summary>
public sealed class SnapshotPauseTests(GatedMapWritesFixture fixture, ITestOutputHelper output) : IClassFixture<GatedMapWritesFixture>
{
    private const long VolumeSize = 4L * StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task A_late_resume_of_one_snapshot_does_not_let_writes_through_while_another_is_being_committed()
    {
        fixture.SkipIfUnavailable();
        var volume = await fixture.Client.CreateVolumeAsync("pause-two-creates", VolumeSize, 1);
        var writer = new RecordingWriterObserver();
        var reference = fixture.Cluster.Client.CreateObjectReference<IVolumeWriterObserver>(writer);
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: true);

        var first = await fixture.Management.CreateSnapshotAsync(volume.Name, "first");
        await writer.WaitForAsync(quiesces: 1, resumes: 1);

        fixture.Gate.Hold();
        var second = fixture.Management.CreateSnapshotAsync(volume.Name, "second");
        await writer.WaitForAsync(quiesces: 2, resumes: 1);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        // The first create's resume again, late: as its creator sends it after waiting out a lease.
        await fixture.Management.ResumeWritersAsync(volume.Name, first.PauseId);
        await writer.WaitForAsync(quiesces: 2, resumes: 2);
        var write = writer.Gates.EnterAsync(volume.VolumeId, CancellationToken.None);
        var gotThrough = write.IsCompleted;
        fixture.Gate.Release(fail: false);
        var taken = await second;
        output.WriteLine($"'second' committed at epoch {taken.Snapshot.Epoch}; the write got through mid-commit: {gotThrough}");
        Assert.False(gotThrough, "a write got through while snapshot 'second' was being committed: the late resume of snapshot 'first' ended its pause");
        using var pass = await write.AsTask().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [SkippableFact]
    public async Task After_a_management_failover_no_snapshot_is_committed_before_a_writer_registered_earlier_is_paused()
    {
        fixture.SkipIfUnavailable();
        var volume = await fixture.Client.CreateVolumeAsync("pause-failover", VolumeSize, 1);
        var writer = new RecordingWriterObserver();
        var reference = fixture.Cluster.Client.CreateObjectReference<IVolumeWriterObserver>(writer);
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: true);
        var before = await fixture.Management.GetStatusAsync();

        await FailOverManagementAsync(before);

        var after = await fixture.Management.GetStatusAsync();
        SnapshotTaken? taken = null;
        WritersNotYetKnownException? refused = null;
        try
        {
            taken = await fixture.Management.CreateSnapshotAsync(volume.Name, "after-failover");
        }
        catch (WritersNotYetKnownException ex)
        {
            refused = ex;
            output.WriteLine($"refused: {ex.Message}");
        }
        Assert.True(taken is null || writer.Quiesces > 0,
            $"the activation of {after.ActivatedAt:HH:mm:ss.fff} committed snapshot 'after-failover' at epoch {taken?.Snapshot.Epoch} while the volume's writer, registered with the activation of {before.ActivatedAt:HH:mm:ss.fff}, was never paused");
        Assert.NotNull(refused);
        Assert.InRange(refused.RetryAfter, TimeSpan.FromTicks(1), VolumeWriters.AllKnownAfter);

        // A volume the new activation created has no writer from before it: its snapshots are not held up.
        var fresh = await fixture.Client.CreateVolumeAsync("pause-created-after-failover", VolumeSize, 1);
        await fixture.Management.CreateSnapshotAsync(fresh.Name, "at-once");

        // The writer renews, as every writer does every 10 s (VolumeWriter). The library asks again
        // once the activation has heard from every writer (30 s after it started), and takes the
        // snapshot with the writer paused. A single renewal would run out (30 s) just then, at
        // times between the pause and the resume.
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: true);
        await using var renewals = new VolumeWriter(watching => fixture.Management.WatchWritesAsync(volume.Name, reference, watching));
        var started = DateTime.UtcNow;
        await fixture.Client.CreateSnapshotAsync(volume.Name, "after-failover");
        output.WriteLine($"taken {(DateTime.UtcNow - started).TotalSeconds:0.0} s after the first refusal");
        Assert.Equal(1, writer.Quiesces);
        await writer.WaitForAsync(quiesces: 1, resumes: 1);
        using var pass = await writer.Gates.EnterAsync(volume.VolumeId, CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [SkippableFact]
    public async Task A_writer_whose_registration_ends_while_the_snapshot_is_committed_is_still_resumed()
    {
        fixture.SkipIfUnavailable();
        var volume = await fixture.Client.CreateVolumeAsync("pause-registration-ends", VolumeSize, 1);
        var writer = new RecordingWriterObserver();
        var reference = fixture.Cluster.Client.CreateObjectReference<IVolumeWriterObserver>(writer);
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: true);

        fixture.Gate.Hold();
        var create = fixture.Management.CreateSnapshotAsync(volume.Name, "registration-ends");
        await writer.WaitForAsync(quiesces: 1, resumes: 0);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        // Its registration ends mid-commit, as one not renewed for VolumeWriters.LeaseTime runs out.
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: false);
        fixture.Gate.Release(fail: false);
        await create;

        await writer.WaitForAsync(quiesces: 1, resumes: 1);
        var write = writer.Gates.EnterAsync(volume.VolumeId, CancellationToken.None);
        Assert.True(write.IsCompleted, "the writer paused by the create was not resumed: its writes wait for the hold limit");
        using var pass = await write;
    }

    /// <summary>A map write that fails deactivates management; the next call starts a new activation, which reloads the map.</summary>
    private async Task FailOverManagementAsync(ManagementStatus before)
    {
        fixture.Gate.Hold();
        var failing = fixture.Client.CreateVolumeAsync("pause-failover-trigger", VolumeSize, 1);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        fixture.Gate.Release(fail: true);
        await Assert.ThrowsAsync<ManagementUnavailableException>(() => failing);
        await new Eventually(output).UntilAsync(
            async () => (await fixture.Management.GetStatusAsync()).ActivatedAt != before.ActivatedAt,
            "a new activation of the management service", TimeSpan.FromSeconds(30));
    }
}
