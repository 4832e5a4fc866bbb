using OrleansStorage.Maps;

namespace OrleansStorage.Management;

/// <summary>
/// What the management service persists in PostgreSQL: the cluster map (with its epoch), and the
/// generation of the activation that last fenced it (each activation takes the next one: hosts
/// tell a newer activation's grants from an older one's by it).
/// </summary>
[GenerateSerializer, Alias("ostor.ManagementState")]
public sealed class ManagementState
{
    [Id(0)] public ClusterMap Map { get; set; } = ClusterMap.Empty;

    [Id(1)] public long Generation { get; set; }
}
