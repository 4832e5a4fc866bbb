using System.ComponentModel.DataAnnotations;

namespace OrleansStorage.Silo.Hosting;

/// <summary>How this silo joins the cluster. Bound from configuration section "Cluster".</summary>
public sealed class ClusterHostOptions
{
    public const string SectionName = "Cluster";

    [Required]
    public string ClusterId { get; set; } = "ostor";

    [Required]
    public string ServiceId { get; set; } = "ostor";

    /// <summary>Address other silos and clients use to reach this one.</summary>
    [Required]
    public string AdvertisedAddress { get; set; } = "127.0.0.1";

    [Range(1, 65535)]
    public int SiloPort { get; set; } = 11111;

    [Range(1, 65535)]
    public int GatewayPort { get; set; } = 30000;

    /// <summary>PostgreSQL holding membership, the cluster map and stream pub-sub state.</summary>
    [Required]
    public string PostgresConnectionString { get; set; } = "";
}
