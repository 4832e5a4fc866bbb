using OrleansStorage.Management;
using OrleansStorage.Maps;

namespace OrleansStorage.Tests.Unit;

/// <summary>Cluster maps for unit tests: 1 MiB segments, hosts host-1..host-N.</summary>
internal static class TestMaps
{
    public static readonly DateTimeOffset Now = new(2026, 11, 26, 0, 0, 0, TimeSpan.Zero);

    public static ClusterMapTransitions Transitions(int groupsPerVolume) =>
        new(new ManagementOptions { SegmentSizeBytes = 1 << 20, PlacementGroupsPerVolume = groupsPerVolume });

    /// <summary>host-1..host-<paramref name="count"/> registered (endpoint eN) and Up.</summary>
    public static ClusterMap WithHosts(ClusterMapTransitions transitions, int count)
    {
        var map = ClusterMap.Empty;
        for (var i = 1; i <= count; i++)
        {
            map = transitions.RegisterHost(map, Registration($"host-{i}"), Now);
        }
        return map;
    }

    public static HostRegistration Registration(string hostId) => new(hostId, 1L << 40, "e" + hostId["host-".Length..]);
}
