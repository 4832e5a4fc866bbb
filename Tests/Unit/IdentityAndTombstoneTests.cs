using OrleansStorage.Errors;
using OrleansStorage.Identity;
using OrleansStorage.Maps;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>Tombstones as map transitions, map recovery from disagreeing hosts, and superblocks, on their own.</summary>
public sealed class IdentityAndTombstoneTests
{
    private static readonly ClusterMapTransitions Transitions = TestMaps.Transitions(4);
    private static readonly Guid Cluster = Guid.Parse("6f1c0e0e-0000-4000-8000-000000000001");

    private static ClusterMap ThreeHostsWith(params string[] volumes)
    {
        var map = TestMaps.WithHosts(Transitions, 3) with { ClusterId = Cluster };
        foreach (var name in volumes)
        {
            map = Transitions.CreateVolume(map, Guid.NewGuid(), name, 4L << 20, 2);
        }
        return map;
    }

    [Fact]
    public void Deleting_leaves_a_tombstone_pending_on_every_host_and_confirmations_prune_it()
    {
        var map = ThreeHostsWith("v");
        var id = map.FindVolume("v")!.VolumeId;
        var deleted = Transitions.DeleteVolume(map, "v");
        Assert.Equal(map.Epoch + 1, deleted.Epoch);
        Assert.Equal(["host-1", "host-2", "host-3"], deleted.FindTombstone(id)!.PendingHosts.ToArray());

        var two = ClusterMapTransitions.ConfirmPurges(deleted, [("host-1", id), ("host-2", id)]);
        Assert.Equal(deleted.Epoch + 1, two.Epoch);
        Assert.Equal(["host-3"], two.FindTombstone(id)!.PendingHosts.ToArray());

        // Repeated, unknown and foreign confirmations change nothing.
        Assert.Same(two, ClusterMapTransitions.ConfirmPurges(two, [("host-1", id), ("host-3", Guid.NewGuid()), ("host-9", id)]));

        var pruned = ClusterMapTransitions.ConfirmPurges(two, [("host-3", id)]);
        Assert.Null(pruned.FindTombstone(id));
        Assert.Equal(two.Epoch + 1, pruned.Epoch);
    }

    [Fact]
    public void Removing_a_host_takes_it_off_every_tombstone()
    {
        var map = ThreeHostsWith("v");
        var id = map.FindVolume("v")!.VolumeId;
        var deleted = ClusterMapTransitions.ConfirmPurges(Transitions.DeleteVolume(map, "v"), [("host-1", id), ("host-2", id)]);
        var down = HostLifecycle.MarkOut(HostLifecycle.MarkDown(deleted, "host-3", TestMaps.Now), "host-3", TestMaps.Now);
        var replanned = HostLifecycle.PlanRecovery(down);
        Assert.Null(HostLifecycle.Remove(replanned, "host-3").FindTombstone(id));
    }

    [Fact]
    public void Recovery_takes_the_newest_saved_map_says_what_others_knew_and_jumps_the_epoch()
    {
        var old = ThreeHostsWith("keep", "gone");
        var gone = old.FindVolume("gone")!.VolumeId;
        var newest = Transitions.ResizeVolume(Transitions.DeleteVolume(old, "gone"), "keep", 8L << 20);
        var stray = Guid.NewGuid();
        var report = MapRecovery.Rebuild(
        [
            new HostDiskReport("host-1", Cluster, old, old.Epoch, [gone]),
            new HostDiskReport("host-2", Cluster, newest, newest.Epoch - 1, [stray]),
            new HostDiskReport("host-3", Guid.Empty, null, 0, []),
        ]);

        Assert.Equal(Cluster, report.Map.ClusterId);
        Assert.Equal(newest.Epoch + MapRecovery.EpochGap, report.Map.Epoch);
        Assert.Equal(8L << 20, report.Map.FindVolume("keep")!.SizeBytes);
        Assert.Null(report.Map.FindVolume("gone"));
        Assert.NotNull(report.Map.FindTombstone(gone));
        var text = string.Join("\n", report.Lines);
        Assert.Contains("host-1 knew it as of epoch", text, StringComparison.Ordinal);
        Assert.Contains("'gone' stays deleted", text, StringComparison.Ordinal);
        Assert.Contains($"host-2 holds files of volume {stray} that no map names", text, StringComparison.Ordinal);
        Assert.Contains("host-3: fresh data directory", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Recovery_jumps_past_write_versions_newer_than_any_saved_map()
    {
        var map = ThreeHostsWith("v");
        var report = MapRecovery.Rebuild([new HostDiskReport("host-1", Cluster, map, map.Epoch + 5, [])]);
        Assert.Equal(map.Epoch + 5 + MapRecovery.EpochGap, report.Map.Epoch);
    }

    [Fact]
    public void Recovery_refuses_hosts_of_two_clusters_and_hosts_without_maps()
    {
        var map = ThreeHostsWith("v");
        var other = Guid.NewGuid();
        var mixed = Assert.Throws<ForeignClusterException>(() => MapRecovery.Rebuild(
        [
            new HostDiskReport("host-1", Cluster, map, map.Epoch, []),
            new HostDiskReport("host-2", other, map with { ClusterId = other }, map.Epoch, []),
        ]));
        Assert.Contains(other.ToString(), mixed.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidRequestException>(() => MapRecovery.Rebuild([new HostDiskReport("host-1", Cluster, null, 0, [])]));
        Assert.Throws<InvalidRequestException>(() => MapRecovery.Rebuild([new HostDiskReport("host-1", Guid.Empty, null, 0, [])]));
        Assert.Throws<InvalidRequestException>(() => MapRecovery.Rebuild([]));
    }

    [Theory]
    [InlineData("not json", "is not an OrleansStorage superblock")]
    [InlineData("{\"format\":1,\"hostId\":\"host-1\"}", "names no cluster or host")]
    [InlineData("{\"format\":9,\"clusterId\":\"6f1c0e0e-0000-4000-8000-000000000001\",\"hostId\":\"host-1\"}", "format 9")]
    public void A_superblock_that_is_not_one_is_refused_by_name(string contents, string expected)
    {
        var error = Assert.Throws<InvalidDataException>(() => Superblock.Parse("/data/superblock.json", System.Text.Encoding.UTF8.GetBytes(contents)));
        Assert.Contains("/data/superblock.json", error.Message, StringComparison.Ordinal);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_superblock_round_trips()
    {
        var superblock = new Superblock(Superblock.CurrentFormat, Cluster, "host-7", TestMaps.Now);
        Assert.Equal(superblock, Superblock.Parse("x", superblock.ToBytes()));
    }
}
