using Microsoft.Extensions.Logging;

namespace OrleansStorage.Logging;

/// <summary>
/// Every log line of the grains. Event ids: 1000-1099 storage server, 1100-1199 management,
/// 1200-1299 placement, 1300-1399 host registration.
/// </summary>
internal static partial class Log
{
    [LoggerMessage(1000, LogLevel.Information, "Storage server {HostId} active on {Silo} at epoch {Epoch}, data in {DataDirectory}")]
    public static partial void StorageServerActivated(ILogger logger, string hostId, string silo, long epoch, string dataDirectory);

    [LoggerMessage(1001, LogLevel.Information, "Storage server {HostId} moved from epoch {From} to {To} ({Source})")]
    public static partial void MapApplied(ILogger logger, string hostId, long from, long to, string source);

    [LoggerMessage(1002, LogLevel.Information, "Storage server {HostId} rejected a request at epoch {RequestEpoch}: it is at epoch {ServerEpoch}")]
    public static partial void StaleRequest(ILogger logger, string hostId, long requestEpoch, long serverEpoch);

    [LoggerMessage(1003, LogLevel.Information, "Storage server {HostId} at epoch {ServerEpoch} got a request at epoch {RequestEpoch}; pulling the map")]
    public static partial void ServerBehind(ILogger logger, string hostId, long serverEpoch, long requestEpoch);

    [LoggerMessage(1004, LogLevel.Warning, "Storage server {HostId} could not report an epoch mismatch")]
    public static partial void MismatchReportFailed(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1005, LogLevel.Information, "Storage server {HostId} removed the segment files of volume {VolumeId}")]
    public static partial void VolumePurged(ILogger logger, string hostId, Guid volumeId);

    [LoggerMessage(1006, LogLevel.Debug, "Storage server {HostId} dropped a pushed map at epoch {Epoch} (push filter)")]
    public static partial void PushDropped(ILogger logger, string hostId, long epoch);

    [LoggerMessage(1007, LogLevel.Information, "Storage server {HostId} removed {Files} segment files of {Groups} placement groups of volume '{Volume}' it no longer holds")]
    public static partial void GroupsReleased(ILogger logger, string hostId, string volume, int groups, int files);

    [LoggerMessage(1008, LogLevel.Information, "Primary {HostId} starts filling {Target} for placement group {Group} of volume {VolumeId} (resync: {Resync})")]
    public static partial void CopyStarted(ILogger logger, string hostId, string target, Guid volumeId, int group, bool resync);

    [LoggerMessage(1009, LogLevel.Information, "Primary {HostId} filled {Target} for placement group {Group} of volume {VolumeId}: {Copied} of {Total} segments copied, {Bytes} bytes")]
    public static partial void CopyFinished(ILogger logger, string hostId, string target, Guid volumeId, int group, long copied, long total, long bytes);

    [LoggerMessage(1010, LogLevel.Warning, "Primary {HostId} stopped filling {Target} for placement group {Group} of volume {VolumeId}: {Reason}; it tries again in {RetrySeconds} s at the earliest")]
    public static partial void CopyFailed(ILogger logger, string hostId, string target, Guid volumeId, int group, string reason, double retrySeconds);

    [LoggerMessage(1011, LogLevel.Warning, "Could not report that {HostId} missed a write")]
    public static partial void ReplicaFailureReportFailed(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1012, LogLevel.Error, "Storage server {HostId} refused the map of cluster {ClusterId} at epoch {Epoch}: {Reason}")]
    public static partial void MapRefused(ILogger logger, string hostId, long epoch, Guid clusterId, string reason);

    [LoggerMessage(1013, LogLevel.Warning, "Storage server {HostId} holds files of volume {VolumeId}, which the map at epoch {Epoch} neither names nor has deleted; they are kept")]
    public static partial void UnknownVolumeKept(ILogger logger, string hostId, Guid volumeId, long epoch);

    [LoggerMessage(1014, LogLevel.Warning, "Storage server {HostId} could not confirm a purge; it confirms again with the next map")]
    public static partial void PurgeConfirmFailed(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1015, LogLevel.Warning, "Storage server {HostId} restarted after an unclean shutdown: {Target} is resynced for {Segments} suspect segments of placement group {Group} of volume '{Volume}'")]
    public static partial void SuspectSegmentsRepair(ILogger logger, string hostId, string target, int group, string volume, int segments);

    [LoggerMessage(1016, LogLevel.Warning, "Storage server {HostId} could not have its suspect segments repaired yet; its next activation tries again")]
    public static partial void SuspectRepairFailed(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1100, LogLevel.Information, "Cluster map is now at epoch {Epoch}: {Change}")]
    public static partial void MapChanged(ILogger logger, long epoch, string change);

    [LoggerMessage(1101, LogLevel.Warning, "Publishing the map at epoch {Epoch} failed; parties will catch up through the epoch check")]
    public static partial void PublishFailed(ILogger logger, Exception exception, long epoch);

    [LoggerMessage(1102, LogLevel.Information, "Epoch mismatch reported by {HostId}: server at {ServerEpoch}, request at {RequestEpoch}, map at {MapEpoch}")]
    public static partial void MismatchReported(ILogger logger, string hostId, long serverEpoch, long requestEpoch, long mapEpoch);

    [LoggerMessage(1103, LogLevel.Warning, "Could not remove the files of deleted volume {VolumeId} from host {HostId}; it will do so when it applies the map")]
    public static partial void PurgeFailed(ILogger logger, Exception exception, Guid volumeId, string hostId);

    [LoggerMessage(1104, LogLevel.Information, "Management service active at epoch {Epoch} with {Hosts} hosts and {Volumes} volumes")]
    public static partial void ManagementActivated(ILogger logger, long epoch, int hosts, int volumes);

    [LoggerMessage(1113, LogLevel.Warning, "Host {HostId} did not confirm the map of snapshot epoch {Epoch} ({Reason}); the snapshot is reported taken once its lease has run out")]
    public static partial void SnapshotFenceWait(ILogger logger, string hostId, long epoch, string reason);

    [LoggerMessage(1017, LogLevel.Information, "Host {HostId} dropped snapshot {SnapshotId} of volume {VolumeId}: {Merged} segment copies passed to the snapshot before it, {Removed} removed")]
    public static partial void SnapshotDropped(ILogger logger, string hostId, Guid snapshotId, Guid volumeId, int merged, int removed);

    [LoggerMessage(1031, LogLevel.Warning, "Host {HostId} holds copy {SegmentIndex} of snapshot {SnapshotId} at an unknown version: it never replaces another replica's; {Action}")]
    public static partial void SnapshotCopyUnknown(ILogger logger, string hostId, Guid snapshotId, long segmentIndex, string action);

    [LoggerMessage(1018, LogLevel.Warning, "Host {HostId} could not drop the copies of a deleted snapshot; the next map change tries again")]
    public static partial void SnapshotDropFailed(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1115, LogLevel.Warning, "The commit of snapshot {Snapshot} of volume {Volume} at epoch {Epoch} failed with its outcome unknown; the volume's writers stay paused until their hold limit ({HoldLimit}), past any primary's lease")]
    public static partial void SnapshotPauseKept(ILogger logger, string snapshot, string volume, long epoch, TimeSpan holdLimit);

    [LoggerMessage(1114, LogLevel.Warning, "A writer of volume {Volume} did not pause for a snapshot ({Reason}); its writes in flight may be split by it")]
    public static partial void WriterQuiesceFailed(ILogger logger, string volume, string reason);

    [LoggerMessage(1105, LogLevel.Warning, "Host {HostId} has no live silo in cluster membership; marking it Down")]
    public static partial void HostLeft(ILogger logger, string hostId);

    [LoggerMessage(1106, LogLevel.Warning, "Management reconciliation failed; it runs again in a moment")]
    public static partial void ReconcileFailed(ILogger logger, Exception exception);

    [LoggerMessage(1107, LogLevel.Debug, "Could not ask primary {HostId} to fill pending replicas")]
    public static partial void CopyKickFailed(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1108, LogLevel.Warning, "Primary {Reporter} could not apply a write on {HostId} for placement group {Group} of volume {VolumeId} ({Reason})")]
    public static partial void ReplicaFailed(ILogger logger, string hostId, int group, Guid volumeId, string reporter, string reason);

    [LoggerMessage(1109, LogLevel.Error, "Persisting the map at epoch {Epoch} ({Change}) failed; nothing was published and this activation deactivates so the next one reloads the map")]
    public static partial void CommitFailed(ILogger logger, Exception exception, long epoch, string change);

    [LoggerMessage(1110, LogLevel.Warning, "Map recovery: {Line}")]
    public static partial void MapRecovered(ILogger logger, string line);

    [LoggerMessage(1111, LogLevel.Error, "Host {HostId} reports a failed disk ({Reason}); it is Out and its groups are refilled elsewhere")]
    public static partial void HostDiskFailed(ILogger logger, string hostId, string reason);

    [LoggerMessage(1200, LogLevel.Warning, "Storage server {HostId} cannot be placed: {Reason}")]
    public static partial void PinFailed(ILogger logger, string hostId, string reason);

    [LoggerMessage(1300, LogLevel.Information, "Host {HostId} registered with the management service (map epoch {Epoch})")]
    public static partial void HostRegistered(ILogger logger, string hostId, long epoch);

    [LoggerMessage(1302, LogLevel.Warning, "Host {HostId} was removed from the cluster map; it serves nothing now and joins again (empty) only when its silo restarts")]
    public static partial void HostRemoved(ILogger logger, string hostId);

    [LoggerMessage(1303, LogLevel.Critical, "Host {HostId} stops serving: {Reason}. Restart it to have it refilled from its peers")]
    public static partial void HostFailStop(ILogger logger, string hostId, string reason);

    [LoggerMessage(1304, LogLevel.Warning, "Host {HostId} could not report its failed disk yet; retrying")]
    public static partial void HostFailStopReportRetry(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1305, LogLevel.Warning, "Power cut of host {HostId} (a fault test): {Files} files rolled back to what their fsyncs made durable")]
    public static partial void PowerCutRestored(ILogger logger, string hostId, int files);

    [LoggerMessage(1301, LogLevel.Warning, "Host {HostId} could not register yet; retrying")]
    public static partial void HostRegistrationRetry(ILogger logger, Exception exception, string hostId);

    [LoggerMessage(1112, LogLevel.Error, "The database holds a map (epoch {StoredEpoch}) this activation did not write (it has epoch {Epoch}); it grants no leases and deactivates")]
    public static partial void ManagementOvertaken(ILogger logger, long epoch, long storedEpoch);

    [LoggerMessage(1128, LogLevel.Error, "The management service stops answering for its map at epoch {Epoch}: {Reason}")]
    public static partial void ManagementUnconfirmed(ILogger logger, long epoch, string reason);

    [LoggerMessage(1130, LogLevel.Warning, "Host {HostId} took leases from management generation {HostGeneration}, newer than this activation's {Generation}: it witnesses nothing for this one, which grants only on what the database confirms")]
    public static partial void NewerManagementGeneration(ILogger logger, string hostId, long hostGeneration, long generation);

    [LoggerMessage(1131, LogLevel.Warning, "The management service's generation was {Before}, behind what hosts reported (the database restored, or the map rebuilt); it is now {After}")]
    public static partial void ManagementGenerationRaised(ILogger logger, long before, long after);

    [LoggerMessage(1129, LogLevel.Warning, "The database confirmed the management service's map at epoch {Epoch} again; it answers again")]
    public static partial void ManagementConfirmedAgain(ILogger logger, long epoch);

    [LoggerMessage(1400, LogLevel.Warning, "Host {HostId} could not renew its primary lease at epoch {Epoch}; it serves nothing as a primary once the lease runs out")]
    public static partial void LeaseRenewalFailed(ILogger logger, Exception exception, string hostId, long epoch);

    [LoggerMessage(1402, LogLevel.Warning, "Host {HostId} could not keep management generation {Generation} on disk; it does not witness that activation until it can")]
    public static partial void LeaseGenerationNotKept(ILogger logger, Exception exception, string hostId, long generation);

    [LoggerMessage(1401, LogLevel.Information, "Host {HostId} holds its primary lease again at epoch {Epoch}")]
    public static partial void LeaseRegained(ILogger logger, string hostId, long epoch);

    [LoggerMessage(1500, LogLevel.Warning, "Primary {HostId} repaired {Blocks} block(s) of volume '{Volume}' segment {Segment} from block {FirstBlock}: they failed their checksums here; good copy from {Source}")]
    public static partial void BlocksRepaired(ILogger logger, string hostId, string volume, long segment, int firstBlock, int blocks, string source);

    [LoggerMessage(1501, LogLevel.Error, "Primary {HostId}: {Blocks} block(s) of volume '{Volume}' segment {Segment} from block {FirstBlock} fail their checksums and no other replica has a good copy; reads of them fail")]
    public static partial void BlocksLost(ILogger logger, string hostId, string volume, long segment, int firstBlock, int blocks);

    [LoggerMessage(1502, LogLevel.Warning, "Replica {HostId}: segment {Segment} of volume {VolumeId} is bad here ({Reason}); it asks to be resynced")]
    public static partial void ReplicaCopyBad(ILogger logger, string hostId, Guid volumeId, long segment, string reason);

    [LoggerMessage(1503, LogLevel.Warning, "Scrub by {HostId} of volume '{Volume}' segment {Segment}: {Problems}; {Repaired} block copies repaired")]
    public static partial void ScrubFound(ILogger logger, string hostId, string volume, long segment, string problems, int repaired);

    [LoggerMessage(1504, LogLevel.Warning, "Background scrub by {HostId} of volume '{Volume}' segment {Segment} failed; the next pass tries again")]
    public static partial void ScrubFailed(ILogger logger, Exception exception, string hostId, string volume, long segment);

    [LoggerMessage(1505, LogLevel.Information, "Background scrub by {HostId} finished a pass: {Segments} segments, {MiB} MiB on all replicas in {Seconds:0} s ({Rate:0.0} MiB/s, pauses for client I/O included), {Repaired} block copies repaired, {Lost} blocks with no good copy")]
    public static partial void ScrubPassFinished(ILogger logger, string hostId, long segments, long miB, double seconds, double rate, long repaired, long lost);

    [LoggerMessage(1600, LogLevel.Warning, "The management service could not persist the epoch mismatch counts; it tries again with the next report or map change")]
    public static partial void MismatchesNotSaved(ILogger logger, Exception exception);
}
