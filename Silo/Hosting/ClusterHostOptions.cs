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

    /// <summary>
    /// The cluster's certificates (<see cref="OrleansStorage.Security.PkiDirectory"/>): with it,
    /// every silo and gateway connection is mutual TLS and takes only this cluster's certificates.
    /// Without it the silo serves in plain text, on a loopback address only.
    /// </summary>
    public string PkiDirectory { get; set; } = "";

    /// <summary>PostgreSQL holding membership, the cluster map and stream pub-sub state.</summary>
    [Required]
    public string PostgresConnectionString { get; set; } = "";
}
