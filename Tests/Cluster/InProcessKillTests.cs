using OrleansStorage.Maps;
using OrleansStorage.Segments;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A host killed inside the test process must come back as a crashed host does (issue 28): a
/// silo's store that wrote its clean-shutdown marker on the way down would be trusted whole at
/// its next start, and the unclean-shutdown paths (suspect segments, copies cut short) would
/// never run in the tests that kill hosts.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class InProcessKillTests(StorageClusterFixture fixture, ITestOutputHelper output)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task A_host_killed_in_process_leaves_no_clean_shutdown_marker_and_returns_with_its_data()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("killed-unclean", 4L * Segment, 3);
        var volume = await fixture.Client.OpenVolumeAsync("killed-unclean");
        var data = Replicas.RandomBytes(2 * Segment, seed: 71);
        await volume.WriteAsync(0, data); // not flushed: every replica holds write intents for it

        var victim = await fixture.PickVictimAsync();
        await fixture.KillHostAsync(victim);
        var marker = Path.Combine(fixture.DataDirectoryOf(victim), "volumes", SegmentStore.CleanShutdownFileName);
        Assert.False(File.Exists(marker), $"the store of '{victim}', killed in process, wrote its clean-shutdown marker on the way down: its next start trusts every version, as after a clean shutdown");

        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        await fixture.WaitForHostsAsync(3);
        await new Eventually(output).MapAsync(fixture.Management.GetMapAsync, map =>
            map.FindHost(victim)?.State == HostState.Up && Eventually.GroupsFull(map), $"'{victim}' back Up and every group whole", TimeSpan.FromSeconds(120));
        var info = (await fixture.Management.GetMapAsync()).FindVolume("killed-unclean")!;
        await Replicas.AssertAllHoldAsync(fixture, info, 0, data);
    }
}
