using System.ComponentModel.DataAnnotations;

namespace OrleansStorage.Management;

/// <summary>How the management service lays out new volumes. Bound from configuration section "Management".</summary>
public sealed class ManagementOptions
{
    public const string SectionName = "Management";

    /// <summary>Size of one segment (one sparse file per replica). A power of two between 64 KiB and 64 MiB.</summary>
    [Range(64 * 1024, 64 * 1024 * 1024)]
    public int SegmentSizeBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>Placement groups per volume (fewer when the volume has fewer segments).</summary>
    [Range(1, 4096)]
    public int PlacementGroupsPerVolume { get; set; } = 64;

    /// <summary>Largest volume accepted; bigger requests are rejected as absurd.</summary>
    [Range(4096, long.MaxValue / 2)]
    public long MaxVolumeSizeBytes { get; set; } = 256L << 40;

    /// <summary>How long a host may stay Down before it is Out and its placement groups are re-replicated elsewhere.</summary>
    public TimeSpan DownGracePeriod { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// While the cluster is starting (its oldest live silo started less than this ago), hosts are
    /// not marked Down: a restarting cluster's silos join one by one. A running cluster marks a
    /// host without a live silo Down at once, also right after the management service failed over.
    /// </summary>
    public TimeSpan MembershipSettleTime { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often the management service compares the map with membership and drives recovery.</summary>
    public TimeSpan ReconcileInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Rebalance on its own whenever nothing is moving (otherwise only on <c>ostor cluster rebalance</c>).</summary>
    public bool AutoRebalance { get; set; }

    /// <summary>
    /// Even out primaries on its own whenever nothing is moving and no host is Down. It moves no
    /// data (it only reorders acting sets), so it is on by default: a host that returned gets its
    /// share of reads back.
    /// </summary>
    public bool AutoBalancePrimaries { get; set; } = true;

    /// <summary>
    /// How long the management service answers for its map (hands it out, grants leases, changes
    /// it) after it last proved with the database that the map is still the stored one: an
    /// activation cut off from the database stops answering after this, so clients and hosts ask
    /// through another gateway, and a blip shorter than this costs nothing (<see cref="MapConfirmation"/>).
    /// As long as a lease (Leases:Duration) by default: no lease it granted runs longer anyway.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan MapConfirmationLimit { get; set; } = TimeSpan.FromSeconds(8);
}
