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

    [Theory]
    [InlineData("")]
    [InlineData("../host")]
    [InlineData("host a")]
    public void Bad_host_ids_are_rejected(string hostId)
    {
        Assert.Throws<InvalidRequestException>(() => _transitions.RegisterHost(ClusterMap.Empty, new HostRegistration(hostId, 1, "e"), Now));
    }
}
