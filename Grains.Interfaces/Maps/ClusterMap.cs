using System.Collections.Immutable;

namespace OrleansStorage.Maps;

/// <summary>
/// The allocation of storage at one point in time. Its <see cref="Epoch"/> is the configuration
/// identifier: it rises by exactly one on every change and is persisted before it is published.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.ClusterMap")]
public sealed record ClusterMap(
    [property: Id(0)] long Epoch,
    [property: Id(1)] ImmutableArray<HostInfo> Hosts,
    [property: Id(2)] ImmutableArray<VolumeInfo> Volumes)
{
    public static ClusterMap Empty { get; } = new(0, [], []);

    public HostInfo? FindHost(string hostId)
    {
        foreach (var host in Hosts)
        {
            if (host.HostId == hostId)
            {
                return host;
            }
        }
        return null;
    }

    public VolumeInfo? FindVolume(Guid volumeId)
    {
        foreach (var volume in Volumes)
        {
            if (volume.VolumeId == volumeId)
            {
                return volume;
            }
        }
        return null;
    }

    public VolumeInfo? FindVolume(string name)
    {
        foreach (var volume in Volumes)
        {
            if (string.Equals(volume.Name, name, StringComparison.Ordinal))
            {
                return volume;
            }
        }
        return null;
    }
}

public enum HostState
{
    /// <summary>Serving I/O; can receive new placement groups.</summary>
    Up = 0,

    /// <summary>Its silo left the cluster; its replicas are out of the acting sets.</summary>
    Down = 1,

    /// <summary>Down past the grace period; its placement groups are re-replicated elsewhere.</summary>
    Out = 2,
}

[GenerateSerializer, Immutable, Alias("ostor.HostInfo")]
public sealed record HostInfo(
    [property: Id(0)] string HostId,
    [property: Id(1)] HostState State,
    [property: Id(2)] long CapacityBytes,
    [property: Id(3)] string Endpoint);

public enum VolumeState
{
    Active = 0,
}

[GenerateSerializer, Immutable, Alias("ostor.VolumeInfo")]
public sealed record VolumeInfo(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] string Name,
    [property: Id(2)] long SizeBytes,
    [property: Id(3)] int ReplicationFactor,
    [property: Id(4)] int SegmentSizeBytes,
    [property: Id(5)] VolumeState State,
    [property: Id(6)] ImmutableArray<PlacementGroup> PlacementGroups)
{
    public long SegmentCount => (SizeBytes + SegmentSizeBytes - 1) / SegmentSizeBytes;

    /// <summary>Segment <c>i</c> belongs to placement group <c>i mod N</c>.</summary>
    public PlacementGroup PlacementGroupOf(long segmentIndex) =>
        PlacementGroups[(int)(segmentIndex % PlacementGroups.Length)];
}

/// <summary>
/// A placement group: an ordered replica set of HostIds; the first is the primary, which orders
/// writes and forwards them to the others.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.PlacementGroup")]
public sealed record PlacementGroup(
    [property: Id(0)] int Index,
    [property: Id(1)] ImmutableArray<string> Replicas)
{
    public string Primary => Replicas[0];

    public bool Contains(string hostId) => Replicas.Contains(hostId);
}
