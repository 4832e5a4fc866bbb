using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

public sealed class SnapshotPauseReviewTests(GatedMapWritesFixture fixture, ITestOutputHelper output) : IClassFixture<GatedMapWritesFixture>
{
    private const long VolumeSize = 4L * StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task Writers_stay_paused_while_a_slow_commit_is_under_way()
    {
        fixture.SkipIfUnavailable();
        var volume = await fixture.Client.CreateVolumeAsync("review-slow-commit", VolumeSize, 1);
        var writer = new RecordingWriterObserver();
        var reference = fixture.Cluster.Client.CreateObjectReference<IVolumeWriterObserver>(writer);
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: true);
        fixture.Gate.Hold();
        var create = fixture.Management.CreateSnapshotAsync(volume.Name, "slow");
        await writer.WaitForAsync(quiesces: 1, resumes: 0);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        await Task.Delay(ManagementGrain.WriterHoldLimit + TimeSpan.FromSeconds(1));
        var write = writer.Gates.EnterAsync(volume.VolumeId, CancellationToken.None);
        var gotThrough = write.IsCompleted;
        fixture.Gate.Release(fail: false);
        try { await create; } catch (Exception ex) { output.WriteLine($"create: {ex.GetType().Name}: {ex.Message}"); }
        await Task.Delay(TimeSpan.FromSeconds(3));
        var map = await fixture.Client.GetMapAsync();
        var snap = map.FindVolume(volume.Name)!.FindSnapshot("slow");
        output.WriteLine($"snapshot committed: {snap is not null} (epoch {snap?.Epoch}); a write got through before the commit: {gotThrough}");
        Assert.False(gotThrough && snap is not null, "the writer went on (hold limit) while the snapshot's commit was still under way, and the snapshot was then committed");
    }

    [SkippableFact]
    public async Task Writers_are_not_released_by_a_commit_whose_outcome_is_unknown()
    {
        fixture.SkipIfUnavailable();
        var volume = await fixture.Client.CreateVolumeAsync("review-ambiguous", VolumeSize, 1);
        var writer = new RecordingWriterObserver();
        var reference = fixture.Cluster.Client.CreateObjectReference<IVolumeWriterObserver>(writer);
        await fixture.Management.WatchWritesAsync(volume.Name, reference, watching: true);
        fixture.Gate.Hold();
        var create = fixture.Management.CreateSnapshotAsync(volume.Name, "ambiguous");
        await writer.WaitForAsync(quiesces: 1, resumes: 0);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        fixture.Gate.ReleaseAfterWriteFailing();
        var error = await Assert.ThrowsAnyAsync<Exception>(() => create);
        output.WriteLine($"create: {error.GetType().Name}: {error.Message}");
        await Task.Delay(TimeSpan.FromSeconds(1));
        var resumed = writer.Resumes > 0;
        var write = writer.Gates.EnterAsync(volume.VolumeId, CancellationToken.None);
        var gotThrough = write.IsCompleted;
        var map = await fixture.Client.GetMapAsync();
        var snap = map.FindVolume(volume.Name)!.FindSnapshot("ambiguous");
        output.WriteLine($"resumes: {writer.Resumes}; writes go on: {gotThrough}; snapshot in the map after the failure: {snap is not null} (epoch {snap?.Epoch}, map epoch {map.Epoch})");
        Assert.False(gotThrough && snap is not null, "the writers were released at once by a failed commit whose snapshot is in the map: no primary was fenced before they went on");
    }
}
