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

        await fixture.Management.CreateSnapshotAsync(volume.Name, "first");
        await writer.WaitForAsync(quiesces: 1, resumes: 1);

        fixture.Gate.Hold();
        var second = fixture.Management.CreateSnapshotAsync(volume.Name, "second");
        await writer.WaitForAsync(quiesces: 2, resumes: 1);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        // The first create's resume again, late: as its creator sends it after waiting out a lease.
        await fixture.Management.ResumeWritersAsync(volume.Name);
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
        var taken = await fixture.Management.CreateSnapshotAsync(volume.Name, "after-failover");
        Assert.True(writer.Quiesces > 0,
            $"the activation of {after.ActivatedAt:HH:mm:ss.fff} committed snapshot 'after-failover' at epoch {taken.Snapshot.Epoch} while the volume's writer, registered with the activation of {before.ActivatedAt:HH:mm:ss.fff}, was never paused");
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
