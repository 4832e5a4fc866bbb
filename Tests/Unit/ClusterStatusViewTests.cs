using OrleansStorage.Client.Cli;
using OrleansStorage.Client.Library;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class ClusterStatusViewTests
{
    private static readonly DateTimeOffset Now = ClusterMapTransitionsTests.Now;

    [Fact]
    public void Status_shows_epoch_host_states_group_health_and_copy_progress()
    {
        var transitions = new ClusterMapTransitions(new ManagementOptions { SegmentSizeBytes = 1 << 20, PlacementGroupsPerVolume = 4 });
        var map = ClusterMap.Empty;
        for (var i = 1; i <= 3; i++)
        {
            map = transitions.RegisterHost(map, new HostRegistration($"host-{i}", 1L << 40, $"e{i}"), Now);
        }
        var volumeId = Guid.NewGuid();
        map = transitions.CreateVolume(map, volumeId, "v", 8L << 20, 2);
        map = HostLifecycle.MarkDown(map, "host-3", Now.AddSeconds(-30));
        map = HostLifecycle.Register(map, new HostRegistration("host-3", 1L << 40, "e3"), Now);
        var pending = map.AllGroups().First(x => !x.Group.Pending.IsEmpty).Group;

        var copy = new CopyProgress(new CopyJob(volumeId, pending.Index, "host-3", Resync: true), pending.Primary, map.Epoch,
            SegmentsTotal: 4, SegmentsDone: 2, SegmentsCopied: 1, BytesCopied: 1 << 20, Started: Now.AddSeconds(-1), Finished: null, Failure: null);
        var hosts = map.Hosts.Select(h => new HostStatus(h, 0,
            new StorageServerStatus(h.HostId, map.Epoch, 1 << 20, 2, "silo", h.HostId == pending.Primary ? [copy] : [], []), null)).ToList();
        var text = ClusterStatusView.Render(new ClusterStatus(new ManagementStatus("silo-1", map.Epoch, map.Epoch, Now), map, hosts), Now);

        Assert.Contains($"epoch {map.Epoch}", text, StringComparison.Ordinal);
        Assert.Contains("degraded", text, StringComparison.Ordinal);
        Assert.Matches(@"[1-9]\d* recovering", text);
        Assert.Contains("host-3", text, StringComparison.Ordinal);
        Assert.Contains($"v/pg {pending.Index}", text, StringComparison.Ordinal);
        Assert.Contains("resync [##########..........] 2/4 segments", text, StringComparison.Ordinal);
    }
}
