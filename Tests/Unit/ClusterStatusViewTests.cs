using OrleansStorage.Client.Cli;
using OrleansStorage.Client.Library;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class ClusterStatusViewTests
{
    private static readonly DateTimeOffset Now = TestMaps.Now;

    [Fact]
    public void Status_shows_epoch_host_states_group_health_and_copy_progress()
    {
        var transitions = TestMaps.Transitions(groupsPerVolume: 4);
        var volumeId = Guid.NewGuid();
        var map = transitions.CreateVolume(TestMaps.WithHosts(transitions, 3), volumeId, "v", 8L << 20, 2);
        map = HostLifecycle.MarkDown(map, "host-3", Now.AddSeconds(-30));
        map = HostLifecycle.Register(map, TestMaps.Registration("host-3"), Now);
        var pending = map.AllGroups().First(x => !x.Group.Pending.IsEmpty).Group;

        var copy = new CopyProgress(new CopyJob(volumeId, pending.Index, "host-3", Resync: true), pending.Primary, map.Epoch,
            SegmentsTotal: 4, SegmentsDone: 2, SegmentsCopied: 1, BytesCopied: 1 << 20, Started: Now.AddSeconds(-1), Finished: null, Failure: null);
        var hosts = map.Hosts.Select(h => new HostStatus(h, 0,
            new StorageServerStatus(h.HostId, map.Epoch, 1 << 20, 2, "silo", h.HostId == pending.Primary ? [copy] : [], [],
                h.HostId == pending.Primary ? [new VolumeScrubRecord(volumeId, Now.AddMinutes(-5), 12, 3, 0, Now.AddMinutes(-5).AddSeconds(-6), 96L << 20)] : [], BlocksRepaired: 3, BlocksLost: 0), null)).ToList();
        var text = ClusterStatusView.Render(new ClusterStatus(new ManagementStatus("silo-1", map.Epoch, map.Epoch, Now), map, hosts), Now);

        Assert.Contains($"epoch {map.Epoch}", text, StringComparison.Ordinal);
        Assert.Contains("degraded", text, StringComparison.Ordinal);
        Assert.Matches(@"[1-9]\d* recovering", text);
        Assert.Contains("host-3", text, StringComparison.Ordinal);
        Assert.Contains($"v/pg {pending.Index}", text, StringComparison.Ordinal);
        Assert.Contains("resync [##########..........] 2/4 segments", text, StringComparison.Ordinal);
        Assert.Matches(@"scrub \S+: last complete 5m ago by 1 of \d primaries, 12 segments, 96.0 MiB checked, 3 blocks repaired, 0 lost", text);
        Assert.Contains($"{pending.Primary}: last scrub pass 96.0 MiB in 6 s = 16.0 MiB/s", text, StringComparison.Ordinal);
        Assert.Contains($"bad blocks since the hosts started: {3 * map.Hosts.Length} repaired", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Status_says_plainly_when_the_database_is_unreachable_and_nothing_when_it_answers()
    {
        var transitions = TestMaps.Transitions(groupsPerVolume: 4);
        var map = TestMaps.WithHosts(transitions, 3);
        var hosts = map.Hosts.Select(h => new HostStatus(h, 0, null, null)).ToList();
        var problem = "the database has not answered for 42 s (last reached 11:59:18 UTC): connection refused. Until it is back, map changes wait";

        var outage = ClusterStatusView.Render(new ClusterStatus(new ManagementStatus("silo-1", map.Epoch, map.Epoch, Now, "host-1", Now.AddSeconds(-42), problem, map), map, hosts), Now);
        var healthy = ClusterStatusView.Render(new ClusterStatus(new ManagementStatus("silo-1", map.Epoch, map.Epoch, Now, "host-1", Now), map, hosts), Now);

        Assert.Contains("DATABASE UNREACHABLE: " + problem, outage, StringComparison.Ordinal);
        Assert.DoesNotContain("DATABASE", healthy, StringComparison.Ordinal);
    }
}
