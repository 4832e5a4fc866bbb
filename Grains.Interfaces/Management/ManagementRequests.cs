using OrleansStorage.Maps;

namespace OrleansStorage.Management;

/// <param name="ClusterId">
/// The cluster named in the host's superblock; <see cref="Guid.Empty"/> for a fresh data directory.
/// Only a fresh host may form a new cluster, and a host of another cluster is refused.
/// </param>
[GenerateSerializer, Immutable, Alias("ostor.HostRegistration")]
public sealed record HostRegistration(
    [property: Id(0)] string HostId,
    [property: Id(1)] long CapacityBytes,
    [property: Id(2)] string Endpoint,
    [property: Id(3)] Guid ClusterId = default,
    [property: Id(4)] bool NearFull = false,
    [property: Id(5)] string DataEndpoint = "");

/// <summary>One host as management sees it: its place in the map plus the mismatch reports counted against it.</summary>
[GenerateSerializer, Immutable, Alias("ostor.HostReport")]
public sealed record HostReport(
    [property: Id(0)] HostInfo Host,
    [property: Id(1)] long MismatchReports);

/// <summary>A party (storage server or client) found its epoch differing from another's.</summary>
[GenerateSerializer, Immutable, Alias("ostor.EpochMismatch")]
public sealed record EpochMismatch(
    [property: Id(0)] string ReportingHostId,
    [property: Id(1)] long ServerEpoch,
    [property: Id(2)] long RequestEpoch);

/// <summary>One map change the management service persisted, and why: the dashboard's live feed.</summary>
[GenerateSerializer, Immutable, Alias("ostor.MapChange")]
public sealed record MapChange(
    [property: Id(0)] long Epoch,
    [property: Id(1)] DateTimeOffset At,
    [property: Id(2)] string Reason);

/// <summary>The management service's activation: the silo it runs on and the epoch it loaded from storage when it activated.</summary>
[GenerateSerializer, Immutable, Alias("ostor.ManagementStatus")]
public sealed record ManagementStatus(
    [property: Id(0)] string Silo,
    [property: Id(1)] long Epoch,
    [property: Id(2)] long ActivatedAtEpoch,
    [property: Id(3)] DateTimeOffset ActivatedAt,
    [property: Id(4)] string HostId = "",
    [property: Id(5)] DateTimeOffset? DatabaseLastReached = null,
    [property: Id(6)] string? DatabaseProblem = null,
    [property: Id(7)] ClusterMap? UnconfirmedMap = null);

/// <summary>The map <c>ostor cluster recover-map</c> rebuilt from the hosts' disks, and what it chose where they differed.</summary>
[GenerateSerializer, Immutable, Alias("ostor.MapRecoveryReport")]
public sealed record MapRecoveryReport(
    [property: Id(0)] ClusterMap Map,
    [property: Id(1)] string[] Lines);

/// <summary>
/// A snapshot committed to the map, and how long a primary that did not confirm the new map may
/// still admit writes at an older epoch (zero when every one confirmed): the caller waits that
/// long before reporting the snapshot taken, and then ends the pause of the volume's writers
/// that this create asked for (<see cref="PauseId"/>) if it is still in force.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.SnapshotTaken")]
public sealed record SnapshotTaken(
    [property: Id(0)] SnapshotInfo Snapshot,
    [property: Id(1)] TimeSpan SettleFor,
    [property: Id(2)] Guid PauseId);

/// <summary>How holders of a volume open for writing keep the management service told (<see cref="IManagementServiceGrain.HoldWriterAsync"/>).</summary>
public static class VolumeWriters
{
    /// <summary>How often a holder renews.</summary>
    public static readonly TimeSpan RenewInterval = TimeSpan.FromSeconds(10);

    /// <summary>A holder not renewed for this long is forgotten: three renewals missed.</summary>
    public static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A writer whose last successful renewal was sent longer ago than this holds its writes to
    /// the volume until a renewal succeeds: the management service may not know it, and would not
    /// pause it for a snapshot. Two intervals and a request timeout (5 s), so one failed renewal
    /// costs nothing.
    /// </summary>
    public static readonly TimeSpan UnrenewedHoldAfter = (2 * RenewInterval) + TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long after it starts a management activation has heard from every writer that still
    /// writes: one that has not renewed with it by then holds its writes
    /// (<see cref="UnrenewedHoldAfter"/>, plus 5 s for a write that entered just before). Registrations
    /// live in memory only, so until then a new activation takes no snapshot of a volume that
    /// existed before it (docs/snapshots.md).
    /// </summary>
    public static readonly TimeSpan AllKnownAfter = UnrenewedHoldAfter + TimeSpan.FromSeconds(5);
}

/// <summary>How many map changes the management service remembers for <see cref="IManagementServiceGrain.GetRecentChangesAsync"/>.</summary>
public static class MapChanges
{
    public const int Kept = 100;
}
