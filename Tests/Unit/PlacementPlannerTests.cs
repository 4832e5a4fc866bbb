using System.Collections.Immutable;
using OrleansStorage.Maps;
using OrleansStorage.Placement;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class PlacementPlannerTests
{
    private static ClusterMap MapWithHosts(int count, params HostState[] states) =>
        new(1, [.. Enumerable.Range(1, count).Select(i => new HostInfo($"host-{i}", i <= states.Length ? states[i - 1] : HostState.Up, 1L << 40, ""))], []);

    [Theory]
    [InlineData(3, 64, 1)]
    [InlineData(3, 64, 2)]
    [InlineData(3, 64, 3)]
    [InlineData(5, 64, 3)]
    [InlineData(4, 7, 2)]
    public void Primaries_and_replicas_spread_evenly_and_never_twice_on_one_host(int hosts, int pgs, int factor)
    {
        var groups = PlacementPlanner.PlaceVolume(MapWithHosts(hosts), pgs, factor);

        Assert.Equal(pgs, groups.Length);
        Assert.All(groups, g => Assert.Equal(factor, g.Replicas.Length));
        Assert.All(groups, g => Assert.Equal(factor, g.Replicas.Distinct().Count()));
        var primaries = groups.GroupBy(g => g.Primary).Select(g => g.Count()).ToList();
        var replicas = groups.SelectMany(g => g.Replicas).GroupBy(h => h).Select(g => g.Count()).ToList();
        Assert.True(primaries.Max() - (primaries.Count < hosts ? 0 : primaries.Min()) <= 1, $"primaries uneven: {string.Join(",", primaries)}");
        Assert.True(replicas.Max() - (replicas.Count < hosts ? 0 : replicas.Min()) <= 1, $"replicas uneven: {string.Join(",", replicas)}");
    }

    [Fact]
    public void Placement_is_stable_for_the_same_map()
    {
        var map = MapWithHosts(4);
        var a = PlacementPlanner.PlaceVolume(map, 64, 2);
        var b = PlacementPlanner.PlaceVolume(map, 64, 2);
        Assert.Equal(a.Select(g => string.Join(",", g.Replicas)), b.Select(g => string.Join(",", g.Replicas)));
    }

    [Fact]
    public void Existing_volumes_are_counted_so_the_cluster_stays_even()
    {
        var map = MapWithHosts(3);
        // A 1-PG volume already has its primary on some host: the next volume balances it out.
        var first = PlacementPlanner.PlaceVolume(map, 1, 1);
        var volume = new VolumeInfo(Guid.NewGuid(), "a", 4096, 1, 4096, VolumeState.Active, first);
        var second = PlacementPlanner.PlaceVolume(map with { Volumes = [volume] }, 2, 1);
        var all = first.Concat(second).Select(g => g.Primary).ToList();
        Assert.Equal(3, all.Distinct().Count());
    }

    [Fact]
    public void Down_and_out_hosts_receive_nothing()
    {
        var map = MapWithHosts(4, HostState.Up, HostState.Down, HostState.Up, HostState.Out);
        var groups = PlacementPlanner.PlaceVolume(map, 32, 2);
        Assert.DoesNotContain(groups.SelectMany(g => g.Replicas), h => h is "host-2" or "host-4");
    }

    [Fact]
    public void A_near_full_host_receives_nothing_new()
    {
        var map = MapWithHosts(4);
        map = map with { Hosts = map.Hosts.Replace(map.FindHost("host-3")!, map.FindHost("host-3")! with { NearFull = true }) };
        var groups = PlacementPlanner.PlaceVolume(map, 32, 3);
        Assert.DoesNotContain(groups.SelectMany(g => g.Replicas), h => h == "host-3");
    }

    [Fact]
    public void Factor_above_the_up_hosts_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => PlacementPlanner.PlaceVolume(MapWithHosts(2), 8, 3));
    }

    [Fact]
    public void Unknown_hosts_in_existing_placement_are_ignored()
    {
        var stale = new VolumeInfo(Guid.NewGuid(), "old", 4096, 1, 4096, VolumeState.Active, [new PlacementGroup(0, ImmutableArray.Create("gone"))]);
        var groups = PlacementPlanner.PlaceVolume(MapWithHosts(2) with { Volumes = [stale] }, 4, 2);
        Assert.All(groups, g => Assert.DoesNotContain("gone", g.Replicas));
    }
}
