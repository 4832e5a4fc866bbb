using System.ComponentModel.DataAnnotations;

namespace OrleansStorage.Hosting;

/// <summary>This host's identity and disk. Bound from configuration section "Storage".</summary>
public sealed class StorageServerOptions
{
    public const string SectionName = "Storage";

    /// <summary>Stable, configured identity of the host (e.g. <c>host-a</c>); never the silo address.</summary>
    [Required, RegularExpression("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
    public string HostId { get; set; } = "";

    /// <summary>Where this host's segment files live.</summary>
    [Required]
    public string DataDirectory { get; set; } = "";

    /// <summary>
    /// The TCP port of this host's data port (reads, writes and replica forwards; docs/data-protocol.md),
    /// on the silo's address. 0: any free port, which the host registers in the map.
    /// </summary>
    [Range(0, 65535)]
    public int DataPort { get; set; }

    /// <summary>How long a primary waits for a replica to answer a forwarded write before it gives the replica up as failed.</summary>
    public TimeSpan ForwardTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Capacity offered to the cluster; 0 means the size of the data directory's disk.</summary>
    [Range(0, long.MaxValue)]
    public long CapacityBytes { get; set; }

    /// <summary>
    /// Segment files kept open at once (least recently used idle ones are closed beyond it). Keep
    /// it well under the process's open-file limit (<c>ulimit -n</c>).
    /// </summary>
    [Range(16, 1_000_000)]
    public int MaxOpenSegmentFiles { get; set; } = Segments.SegmentStore.DefaultMaxOpenSegments;

    /// <summary>
    /// Bytes per second this host sends when filling other replicas (re-replication, resync,
    /// rebalance), all copies together, so client I/O keeps its share of disk and network.
    /// </summary>
    [Range(1024 * 1024, long.MaxValue)]
    public long RecoveryBandwidthBytesPerSecond { get; set; } = 64L * 1024 * 1024;

    /// <summary>
    /// Bytes per second the background scrub reads (on every replica together) to check the
    /// segments this host leads; 0 turns it off. It pauses while clients are doing I/O here.
    /// </summary>
    [Range(0, long.MaxValue)]
    public long ScrubBytesPerSecond { get; set; } = 16L * 1024 * 1024;

    /// <summary>From the start of one background scrub pass over this host's segments to the start of the next.</summary>
    public TimeSpan ScrubInterval { get; set; } = TimeSpan.FromHours(24);

    /// <summary>The background scrub waits until no client request has reached this host for this long.</summary>
    public TimeSpan ScrubIdleAfterClientIo { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Used share of what this host offers (<see cref="CapacityBytes"/> by its segment files when
    /// set, else the data directory's file system) at which it is near full: it keeps what it
    /// holds but takes no new replicas.
    /// </summary>
    [Range(0.5, 1.0)]
    public double NearFullRatio { get; set; } = 0.90;

    /// <summary>Copies to pending replicas this host runs at once as a primary.</summary>
    [Range(1, 64)]
    public int MaxConcurrentCopies { get; set; } = 2;

    /// <summary>
    /// Start even though the database holds no cluster map while this data directory holds data
    /// of a cluster (the database was lost), so that <c>ostor cluster recover-map</c> can rebuild
    /// the map from the hosts' disks. Switch <c>--recover</c>.
    /// </summary>
    public bool RecoverMap { get; set; }

    /// <summary>
    /// For fault tests only (infra/chaos): the segment store records what each of its fsyncs made
    /// durable in <see cref="DurableImageFolderName"/> beside the volumes, so that a test can cut
    /// this host's power (kill it, then roll its volumes back with <see cref="Files.DurableImage"/>),
    /// and every fsync fails while that folder holds <see cref="Files.DurableImage.FailFsyncFileName"/>.
    /// It copies a file at every fsync of it: never in production.
    /// </summary>
    public bool RecordDurableImage { get; set; }

    public const string DurableImageFolderName = "durable-image";

    /// <summary>How often this host registers again with the management service (see HostRegistrationService).</summary>
    public TimeSpan RegistrationInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How long placement waits for a starting host's silo metadata before failing the activation.</summary>
    public TimeSpan PinnedActivationWait { get; set; } = TimeSpan.FromSeconds(5);
}
