using OrleansStorage.Maps;

namespace OrleansStorage.Management;

/// <summary>What the management service persists in PostgreSQL: the cluster map (with its epoch).</summary>
[GenerateSerializer, Alias("ostor.ManagementState")]
public sealed class ManagementState
{
    [Id(0)] public ClusterMap Map { get; set; } = ClusterMap.Empty;
}
