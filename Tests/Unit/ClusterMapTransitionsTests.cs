using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class ClusterMapTransitionsTests
{
    private readonly ClusterMapTransitions _transitions = new(new ManagementOptions { SegmentSizeBytes = 1 << 20, PlacementGroupsPerVolume = 64 });
    private static readonly DateTimeOffset Now = TestMaps.Now;

    private ClusterMap ThreeHosts()
    {
        var map = ClusterMap.Empty;
        for (var i = 1; i <= 3; i++)
        {
            map = _transitions.RegisterHost(map, new HostRegistration($"host-{i}", 1L << 40, $"127.0.0.1:{30000 + i}"), Now);
        }
        return map;
    }

    [Fact]
    public void Every_change_raises_the_epoch_by_exactly_one()
    {
        var map = ThreeHosts();
        Assert.Equal(3, map.Epoch);
        var created = _transitions.CreateVolume(map, Guid.NewGuid(), "v", 8L << 20, 2);
        Assert.Equal(4, created.Epoch);
        var resized = _transitions.ResizeVolume(created, "v", 16L << 20);
        Assert.Equal(5, resized.Epoch);
        var deleted = _transitions.DeleteVolume(resized, "v");
        Assert.Equal(6, deleted.Epoch);
        Assert.Empty(deleted.Volumes);
    }

    [Fact]
    public void Requests_that_change_nothing_keep_the_same_map_and_epoch()
    {
        var map = _transitions.CreateVolume(ThreeHosts(), Guid.NewGuid(), "v", 8L << 20, 2);
        Assert.Same(map, _transitions.RegisterHost(map, new HostRegistration("host-1", 1L << 40, "127.0.0.1:30001"), Now));
        Assert.Same(map, _transitions.ResizeVolume(map, "v", 8L << 20));
    }

    [Fact]
    public void A_host_registering_with_a_new_endpoint_is_a_change()
    {
        var map = ThreeHosts();
        var moved = _transitions.RegisterHost(map, new HostRegistration("host-1", 1L << 40, "127.0.0.1:40000"), Now);
        Assert.Equal(map.Epoch + 1, moved.Epoch);
        Assert.Equal("127.0.0.1:40000", moved.FindHost("host-1")!.Endpoint);
        Assert.Equal(3, moved.Hosts.Length);
    }

    [Fact]
    public void Placement_groups_are_fewer_for_tiny_volumes_and_capped_for_large_ones()
    {
        var map = ThreeHosts();
        Assert.Equal(3, _transitions.CreateVolume(map, Guid.NewGuid(), "tiny", 3L << 20, 1).FindVolume("tiny")!.PlacementGroups.Length);
        Assert.Single(_transitions.CreateVolume(map, Guid.NewGuid(), "one", 4096, 1).FindVolume("one")!.PlacementGroups);
        Assert.Equal(64, _transitions.CreateVolume(map, Guid.NewGuid(), "big", 1L << 30, 1).FindVolume("big")!.PlacementGroups.Length);
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("a/b")]
    [InlineData("a\\b")]
    [InlineData(".x")]
    [InlineData("-x")]
    [InlineData("a..b")]
    [InlineData("")]
    [InlineData("with space")]
    [InlineData("ünïcode")]
    public void Unsafe_names_are_rejected(string name)
    {
        Assert.Throws<InvalidRequestException>(() => _transitions.CreateVolume(ThreeHosts(), Guid.NewGuid(), name, 4096, 1));
    }

    [Fact]
    public void Names_longer_than_the_limit_are_rejected_with_the_limit_in_the_message()
    {
        var error = Assert.Throws<InvalidRequestException>(() => _transitions.CreateVolume(ThreeHosts(), Guid.NewGuid(), new string('a', 65), 4096, 1));
        Assert.Contains("64", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(100L)]
    [InlineData(4097L)]
    [InlineData(1L << 62)]
    public void Bad_sizes_are_rejected(long size)
    {
        Assert.Throws<InvalidRequestException>(() => _transitions.CreateVolume(ThreeHosts(), Guid.NewGuid(), "v", size, 1));
    }

    [Fact]
    public void Factor_needs_that_many_up_hosts()
    {
        var oneHost = _transitions.RegisterHost(ClusterMap.Empty, new HostRegistration("host-1", 1L << 40, "e"), Now);
        var error = Assert.Throws<InvalidRequestException>(() => _transitions.CreateVolume(oneHost, Guid.NewGuid(), "v", 4096, 2));
        Assert.Contains("has 1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Duplicate_names_and_shrinking_are_rejected()
    {
        var map = _transitions.CreateVolume(ThreeHosts(), Guid.NewGuid(), "v", 8L << 20, 1);
        Assert.Throws<InvalidRequestException>(() => _transitions.CreateVolume(map, Guid.NewGuid(), "v", 4096, 1));
        Assert.Throws<InvalidRequestException>(() => _transitions.ResizeVolume(map, "v", 4096));
        Assert.Throws<VolumeNotFoundException>(() => _transitions.ResizeVolume(map, "w", 1L << 30));
        Assert.Throws<VolumeNotFoundException>(() => _transitions.DeleteVolume(map, "w"));
    }

    /// <summary>Hosts skip the unknown-lease wait after a management failover only for groups they led without a break since a map they held a lease on (docs/failures.md, "Management moves").</summary>
    [Fact]
    public void A_commit_stamps_the_epoch_at_which_a_group_got_its_primary_and_keeps_it_while_the_primary_stays()
    {
        var hosts = ThreeHosts();
        var volumeId = Guid.NewGuid();
        var created = ClusterMapTransitions.StampPrimaryChanges(hosts, _transitions.CreateVolume(hosts, volumeId, "v", 8L << 20, 3));
        Assert.All(created.FindVolume(volumeId)!.PlacementGroups, g => Assert.Equal(created.Epoch, g.PrimarySinceEpoch)); // new groups

        // A reorder: swapping the primary with a secondary stamps; swapping two secondaries does not.
        var volume = created.FindVolume(volumeId)!;
        var g0 = volume.PlacementGroups[0];
        var g1 = volume.PlacementGroups[1];
        Assert.Equal(3, g1.Replicas.Length);
        var reorderedVolume = volume with
        {
            PlacementGroups = volume.PlacementGroups
                .SetItem(0, g0 with { Replicas = [g0.Replicas[1], g0.Replicas[0], g0.Replicas[2]] })
                .SetItem(1, g1 with { Replicas = [g1.Replicas[0], g1.Replicas[2], g1.Replicas[1]] }),
        };
        var reordered = ClusterMapTransitions.StampPrimaryChanges(created, created with { Epoch = created.Epoch + 1, Volumes = created.Volumes.Replace(volume, reorderedVolume) });
        var groups = reordered.FindVolume(volumeId)!.PlacementGroups;
        Assert.Equal(g0.Replicas[1], groups[0].Primary);
        Assert.Equal(reordered.Epoch, groups[0].PrimarySinceEpoch);
        Assert.Equal(g1.Primary, groups[1].Primary);
        Assert.Equal(created.Epoch, groups[1].PrimarySinceEpoch);

        // A failover: the groups host-1 led change primary and are stamped; the others keep their stamp.
        var down = ClusterMapTransitions.StampPrimaryChanges(reordered, HostLifecycle.MarkDown(reordered, "host-1", Now));
        var after = down.FindVolume(volumeId)!.PlacementGroups;
        Assert.Contains(groups, g => g.Primary == "host-1");
        Assert.Contains(groups, g => g.Primary != "host-1");
        foreach (var group in after)
        {
            var moved = groups[group.Index].Primary != group.Primary;
            Assert.Equal(groups[group.Index].Primary == "host-1", moved);
            Assert.Equal(moved ? down.Epoch : groups[group.Index].PrimarySinceEpoch, group.PrimarySinceEpoch);
        }

        // A map written before the stamp existed (0: unknown) is stamped at its next commit, never kept at 0.
        var unknown = down with { Volumes = [.. down.Volumes.Select(v => v with { PlacementGroups = [.. v.PlacementGroups.Select(g => g with { PrimarySinceEpoch = 0 })] })] };
        var next = ClusterMapTransitions.StampPrimaryChanges(unknown, _transitions.ResizeVolume(unknown, "v", 16L << 20));
        Assert.All(next.FindVolume(volumeId)!.PlacementGroups, g => Assert.Equal(next.Epoch, g.PrimarySinceEpoch));
    }

    [Theory]
    [InlineData("")]
    [InlineData("../host")]
    [InlineData("host a")]
    public void Bad_host_ids_are_rejected(string hostId)
    {
        Assert.Throws<InvalidRequestException>(() => _transitions.RegisterHost(ClusterMap.Empty, new HostRegistration(hostId, 1, "e"), Now));
    }
}
