using OrleansStorage.Maps;

namespace OrleansStorage.Identity;

/// <summary>
/// What one host's data directory says about the cluster, read for <c>ostor cluster recover-map</c>.
/// </summary>
/// <param name="ClusterId">The cluster in the host's superblock; <see cref="Guid.Empty"/> for a fresh directory.</param>
/// <param name="LastMap">The last map the host adopted (kept next to its segments), or null if it never adopted one.</param>
/// <param name="HighestVersionEpoch">The highest epoch found in the host's segment write versions.</param>
/// <param name="VolumesOnDisk">Every volume the host holds segment files of.</param>
[GenerateSerializer, Immutable, Alias("ostor.HostDiskReport")]
public sealed record HostDiskReport(
    [property: Id(0)] string HostId,
    [property: Id(1)] Guid ClusterId,
    [property: Id(2)] ClusterMap? LastMap,
    [property: Id(3)] long HighestVersionEpoch,
    [property: Id(4)] Guid[] VolumesOnDisk);
