using OrleansStorage.Auth;
using Orleans.Concurrency;
using OrleansStorage.Leases;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

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

    /// <summary>
    /// A running host's periodic check-in: like <see cref="RegisterHostAsync"/> for a host in the
    /// map (a host judged Down while alive comes back), but a host that was removed is not added
    /// again: returns false, and the host stays out until its silo restarts.
    /// </summary>
    [Alias("RenewHost")]
    Task<bool> RenewHostAsync(HostRegistration registration);

    /// <summary>
    /// A storage server's primary lease, granted on the map the database holds now (checked with
    /// a read of it, so a management service cut off from the database grants nothing). A server
    /// whose map is older is told the epoch to catch up to. See docs/failures.md, "Read leases".
    /// </summary>
    [Alias("RenewLease")]
    [AlwaysInterleave]
    Task<LeaseGrant> RenewLeaseAsync(LeaseRequest request);

    [Alias("CreateVolume")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task<VolumeInfo> CreateVolumeAsync(string name, long sizeBytes, int replicationFactor);

    [Alias("ResizeVolume")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task<VolumeInfo> ResizeVolumeAsync(string name, long newSizeBytes);

    /// <summary>Sets (replaces) a volume's QoS limits; <see cref="VolumeQos.Unlimited"/> lifts them. An epoch like any map change.</summary>
    [Alias("SetVolumeQos")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task<VolumeInfo> SetVolumeQosAsync(string name, VolumeQos qos);

    /// <summary>Deletes a volume and its data on every host; one with snapshots only when <paramref name="withSnapshots"/>, and they go with it.</summary>
    [Alias("DeleteVolume")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task DeleteVolumeAsync(string name, bool withSnapshots);

    /// <summary>
    /// Takes a snapshot of the volume: one map change. The caller reports it taken after
    /// <see cref="SnapshotTaken.SettleFor"/>: from then on no write sent is in it (docs/snapshots.md).
    /// Refused with <see cref="Errors.WritersNotYetKnownException"/> while this activation of the
    /// service may not know every writer of the volume yet (just after a failover).
    /// </summary>
    [Alias("CreateSnapshot")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task<SnapshotTaken> CreateSnapshotAsync(string volumeName, string snapshotName);

    /// <summary>Deletes a snapshot; every host frees (or passes to the snapshot before it) the copies it held.</summary>
    [Alias("DeleteSnapshot")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task DeleteSnapshotAsync(string volumeName, string snapshotName);

    /// <summary>
    /// A new volume that reads through to the snapshot where it was never written; writable, of
    /// the snapshot's size, with its own replication factor (docs/snapshots.md, "Clones").
    /// </summary>
    [Alias("CloneVolume")]
    [Requires(Access.Admin, VolumeNameArgument = 2, SourceVolumeArgument = 0)]
    Task<VolumeInfo> CloneVolumeAsync(string sourceVolume, string snapshotName, string name, int replicationFactor);

    /// <summary>Cuts a clone's link to its parent snapshot; every segment must have been materialized first (the client library's flatten does that).</summary>
    [Alias("FlattenVolume")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    Task<VolumeInfo> FlattenVolumeAsync(string name);

    /// <summary>
    /// A client holds the volume open for writing (the NBD export does, per connection), or with
    /// <paramref name="open"/> false no longer does. Renewed while it lasts; forgotten when not
    /// renewed for a while. Kept in memory: after a failover the renewals fill it again.
    /// </summary>
    [Alias("HoldWriter")]
    [Requires(Access.Write, VolumeNameArgument = 0)]
    [AlwaysInterleave]
    Task HoldWriterAsync(string volumeName, string holder, bool open);

    /// <summary>
    /// A client writes the volume and can be asked to pause around a snapshot
    /// (<see cref="IVolumeWriterObserver"/>); renewed every <see cref="VolumeWriters.RenewInterval"/>,
    /// and with <paramref name="watching"/> false gone at once (the client is closing). Returns the
    /// pauses of the volume in force now (snapshots being taken): the client starts paused by them.
    /// </summary>
    [Alias("WatchWritesWithPauseIds")]
    [Requires(Access.Write, VolumeNameArgument = 0)]
    [AlwaysInterleave]
    Task<Guid[]> WatchWritesAsync(string volumeName, IVolumeWriterObserver observer, bool watching);

    /// <summary>
    /// Ends the pause of the volume's writers that one create asked for (<see cref="SnapshotTaken.PauseId"/>),
    /// and no other: the snapshot's creator calls it once it waited out <see cref="SnapshotTaken.SettleFor"/>.
    /// </summary>
    [Alias("ResumeWritersWithPauseId")]
    [Requires(Access.Admin, VolumeNameArgument = 0)]
    [AlwaysInterleave]
    Task ResumeWritersAsync(string volumeName, Guid pauseId);

    /// <summary>Who holds the volume open for writing now (what <see cref="HoldWriterAsync"/> heard).</summary>
    [Alias("GetWriters")]
    [Requires(Access.Read, VolumeNameArgument = 0)]
    [AlwaysInterleave]
    Task<string[]> GetWritersAsync(string volumeName);

    [Alias("GetMap")]
    [Requires(Access.Authenticated)]
    [AlwaysInterleave]
    [AnyGateway]
    Task<ClusterMap> GetMapAsync();

    /// <summary>Where the management service runs and what it loaded when it (re)activated.</summary>
    [Alias("GetStatus")]
    [Requires(Access.Authenticated)]
    [AlwaysInterleave]
    [AnyGateway]
    Task<ManagementStatus> GetStatusAsync();

    /// <summary>The last map changes this activation made, oldest first, with their reasons (at most <see cref="MapChanges.Kept"/>).</summary>
    [Alias("GetRecentChanges")]
    [Requires(Access.Authenticated)]
    [AlwaysInterleave]
    Task<MapChange[]> GetRecentChangesAsync();

    [Alias("GetHosts")]
    [Requires(Access.Authenticated)]
    [AlwaysInterleave]
    [AnyGateway]
    Task<IReadOnlyList<HostReport>> GetHostsAsync();

    /// <summary>Starts moving every placement group off a host (it becomes Draining); progress shows in the map and <c>ostor status</c>.</summary>
    [Alias("EvacuateHost")]
    [Requires(Access.ClusterAdmin)]
    Task<ClusterMap> EvacuateHostAsync(string hostId);

    /// <summary>Removes a host that no placement group names any more.</summary>
    [Alias("RemoveHost")]
    [Requires(Access.ClusterAdmin)]
    Task<ClusterMap> RemoveHostAsync(string hostId);

    /// <summary>
    /// One rebalancing step: plans replica moves toward even load, or, once replicas are even,
    /// evens primaries. Returns the map; the same epoch as before means the cluster is balanced
    /// (or a previous step is still moving data).
    /// </summary>
    [Alias("Rebalance")]
    [Requires(Access.ClusterAdmin)]
    Task<ClusterMap> RebalanceAsync();

    /// <summary>A primary could not apply a write on another replica: that replica leaves the acting set and is resynced.</summary>
    [Alias("ReportReplicaFailed")]
    Task ReportReplicaFailedAsync(ReplicaFailure failure);

    /// <summary>
    /// A host's disk failed (fsync): it stops serving until restarted. It is Out at once — its
    /// data cannot be trusted, so its groups are refilled elsewhere and it returns empty.
    /// </summary>
    [Alias("HostFailed")]
    Task HostFailedAsync(string hostId, string reason);

    /// <summary>A primary finished filling a pending replica.</summary>
    [Alias("CopyCompleted")]
    Task CopyCompletedAsync(CopyCompletion completion);

    /// <summary>
    /// A host removed the files of these tombstoned volumes. Once every host has, the tombstone
    /// leaves the map.
    /// </summary>
    [Alias("ConfirmPurged")]
    Task ConfirmPurgedAsync(string hostId, Guid[] volumeIds);

    /// <summary>
    /// Rebuilds the map from what the live hosts keep on disk, when the database holds none (it was
    /// lost). Refused when the database holds a map, and while fewer than
    /// <paramref name="expectedHosts"/> hosts are live (0: whoever is live). See
    /// docs/epoch-protocol.md, "Recovering the map".
    /// </summary>
    [Alias("RecoverMap")]
    [Requires(Access.ClusterAdmin)]
    Task<MapRecoveryReport> RecoverMapAsync(int expectedHosts);

    /// <summary>
    /// A storage server saw a request whose epoch differs from its own. Counted per host; a
    /// server that is behind gets the current map re-sent straight away.
    /// </summary>
    [Alias("ReportMismatch")]
    [AlwaysInterleave]
    Task ReportMismatchAsync(EpochMismatch mismatch);
}
