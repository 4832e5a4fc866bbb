using Orleans.Concurrency;
using OrleansStorage.Maps;

namespace OrleansStorage.Management;

/// <summary>
/// The management service (key <see cref="DefaultKey"/>): owns the cluster map, persists every
/// change with epoch + 1 before publishing it on the cluster-map stream.
/// </summary>
[Alias("ostor.IManagementServiceGrain")]
public interface IManagementServiceGrain : IGrainWithStringKey
{
    public const string DefaultKey = "default";

    [Alias("RegisterHost")]
    Task<ClusterMap> RegisterHostAsync(HostRegistration registration);

    [Alias("CreateVolume")]
    Task<VolumeInfo> CreateVolumeAsync(string name, long sizeBytes, int replicationFactor);

    [Alias("ResizeVolume")]
    Task<VolumeInfo> ResizeVolumeAsync(string name, long newSizeBytes);

    [Alias("DeleteVolume")]
    Task DeleteVolumeAsync(string name);

    [Alias("GetMap")]
    [AlwaysInterleave]
    Task<ClusterMap> GetMapAsync();

    [Alias("GetHosts")]
    [AlwaysInterleave]
    Task<IReadOnlyList<HostReport>> GetHostsAsync();

    /// <summary>
    /// A storage server saw a request whose epoch differs from its own. Counted per host; a
    /// server that is behind gets the current map re-sent straight away.
    /// </summary>
    [Alias("ReportMismatch")]
    [AlwaysInterleave]
    Task ReportMismatchAsync(EpochMismatch mismatch);
}
