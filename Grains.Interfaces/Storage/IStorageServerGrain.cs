using OrleansStorage.Auth;
using OrleansStorage.Identity;
using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

/// <summary>
/// The storage server of one host (grain key = HostId), pinned to that host's silo. It owns the
/// host's segment files and checks the epoch of every request (docs/epoch-protocol.md). Clients
/// and primaries send the data operations (read, write, trim, flush, allocation, replica
/// forwards) to the host's data port instead (docs/data-protocol.md), which runs these same
/// methods; through this interface they remain for tools and tests.
/// </summary>
[Alias("ostor.IStorageServerGrain")]
public interface IStorageServerGrain : IGrainWithStringKey
{
    /// <summary>Reads from the segment; never-written bytes read as zeros. Served by the PG's primary.</summary>
    [Alias("Read")]
    [Requires(Access.Read)]
    Task<SegmentData> ReadAsync(SegmentRead request);

    /// <summary>
    /// A client write, sent to the PG's primary. The primary orders it against overlapping writes,
    /// applies it, forwards it to the other replicas in parallel and returns once all applied it.
    /// </summary>
    [Alias("Write")]
    [Requires(Access.Write)]
    Task WriteAsync(SegmentWrite request);

    /// <summary>
    /// The written (allocated) ranges of [Offset, Offset+Length) of a segment, in order; the rest
    /// is holes that read as zeros. Served by the PG's primary, like reads.
    /// </summary>
    [Alias("GetAllocation")]
    [Requires(Access.Read)]
    Task<DataExtent[]> GetAllocationAsync(SegmentRead request);

    [Alias("Trim")]
    [Requires(Access.Write)]
    Task TrimAsync(SegmentTrim request);

    /// <summary>A write forwarded by the PG's primary; the primary sends overlapping writes one at a time, so every replica applies them in one order.</summary>
    [Alias("ReplicaWrite")]
    Task ReplicaWriteAsync(SegmentWrite request);

    [Alias("ReplicaTrim")]
    Task ReplicaTrimAsync(SegmentTrim request);

    /// <summary>Makes every earlier acknowledged write to the volume durable (fsync) on this host.</summary>
    [Alias("Flush")]
    [Requires(Access.Write)]
    Task FlushAsync(long epoch, Guid volumeId);

    /// <summary>
    /// A hint that the map has moved to <paramref name="epoch"/>: a server behind it pulls the
    /// persisted map from the management service. It never takes a map from the caller.
    /// </summary>
    [Alias("RefreshMap")]
    Task RefreshMapAsync(long epoch);

    /// <summary>
    /// A hint from the management service: an earlier primary of a group this host now leads gave
    /// its lease up, so a renewal lets this host serve the group at once. Never a grant itself.
    /// </summary>
    [Alias("LeaseReleased")]
    Task LeaseReleasedAsync();

    /// <summary>
    /// Whether this host's silo reads the map from the database now: asked by a management
    /// activation that cannot, to tell a database down for everyone (it goes on granting leases on
    /// its witnesses) from one cut off from the database alone (it steps aside for a new one).
    /// </summary>
    [Alias("ReachesDatabase")]
    Task<bool> ReachesDatabaseAsync();

    /// <summary>What this host's disk says about the cluster: superblock, last adopted map, newest write version. For map recovery.</summary>
    [Alias("GetDiskReport")]
    Task<HostDiskReport> GetDiskReportAsync();

    /// <summary>
    /// Removes every segment file of a volume deleted at <paramref name="epoch"/>. A server behind
    /// that epoch catches up first; one whose map still has the volume refuses.
    /// </summary>
    [Alias("PurgeVolume")]
    Task PurgeVolumeAsync(Guid volumeId, long epoch);

    [Alias("GetStatus")]
    [Requires(Access.Authenticated)]
    Task<StorageServerStatus> GetStatusAsync();

    /// <summary>
    /// As a PG's primary: start filling each pending replica named, unless a copy to it is already
    /// running. Returns at once; the copy reports to management when done.
    /// </summary>
    [Alias("EnsureCopies")]
    Task EnsureCopiesAsync(long epoch, CopyJob[] jobs);

    /// <summary>As a pending replica: the write version of each segment of the group, in segment order.</summary>
    [Alias("GetSegmentVersions")]
    Task<long[]> GetSegmentVersionsAsync(long epoch, Guid volumeId, int groupIndex);

    /// <summary>As a pending replica: replace one segment with the primary's copy.</summary>
    [Alias("InstallSegment")]
    Task InstallSegmentAsync(SegmentImage image);

    /// <summary>
    /// As a pending replica: the primary found our version of the segment equal to its own, with no
    /// write to it in flight; true (and the segment counts as installed) if it still is.
    /// </summary>
    [Alias("ConfirmSegment")]
    Task<bool> ConfirmSegmentAsync(long epoch, SegmentAddress segment, long version);

    /// <summary>As a pending replica: the versions of every snapshot's copies of the group's segments.</summary>
    [Alias("GetSnapshotCopyVersions")]
    Task<SnapshotCopyVersions[]> GetSnapshotCopyVersionsAsync(long epoch, Guid volumeId, int groupIndex);

    /// <summary>As a pending replica: replace (or drop) one snapshot's copy of a segment with the primary's.</summary>
    [Alias("InstallSnapshotCopy")]
    Task InstallSnapshotCopyAsync(SnapshotCopyImage image);

    /// <summary>
    /// As the group's primary: the version of each of the group's segments as the snapshot holds
    /// it (or as the volume holds it now, for <see cref="Guid.Empty"/>), in segment order. Two
    /// images whose versions agree hold the same bytes: what <c>ostor snapshot diff</c> compares.
    /// </summary>
    [Alias("GetImageVersions")]
    [Requires(Access.Authenticated)]
    Task<long[]> GetImageVersionsAsync(long epoch, Guid volumeId, int groupIndex, Guid snapshotId);

    /// <summary>As the group's primary: bytes of the snapshot's own copies of the group's segments that no older snapshot reads (deleting it frees them).</summary>
    [Alias("GetSnapshotUsage")]
    [Requires(Access.Authenticated)]
    Task<long> GetSnapshotUsageAsync(long epoch, Guid volumeId, int groupIndex, Guid snapshotId);

    /// <summary>
    /// As the PG's primary, with <paramref name="deep"/>: checks every block of the segment on
    /// every acting replica against its checksum and against the others (a block's good copies
    /// decide by majority, the primary's breaking a tie), and with <paramref name="repair"/>
    /// rewrites every bad or different copy from a good one. Without <paramref name="deep"/>
    /// (light, no data read): compares the segment's write version on every acting replica with
    /// the primary's, and with <paramref name="repair"/> has each that differs resynced. Writes to
    /// the segment wait meanwhile.
    /// </summary>
    [Alias("ScrubSegment")]
    [Requires(Access.Admin)]
    Task<SegmentScrub> ScrubSegmentAsync(long epoch, SegmentAddress segment, bool repair, bool deep);

    /// <summary>How long since a client request last reached this host: a primary's background scrub waits while any replica it would read is busy.</summary>
    [Alias("TimeSinceClientRequest")]
    Task<TimeSpan> TimeSinceClientRequestAsync();

    /// <summary>As a replica, for the primary's light scrub: the segment's write version here.</summary>
    [Alias("GetSegmentVersion")]
    Task<long> GetSegmentVersionAsync(long epoch, SegmentAddress segment);

    /// <summary>
    /// From a host that led the group and recorded a write that reached some replicas and not
    /// others: this host's version of the segment becomes unknown, so it never looks equal to
    /// another copy (a forward cannot raise it) until a resync's copy replaces the segment.
    /// </summary>
    [Alias("ForgetSegmentVersion")]
    Task ForgetSegmentVersionAsync(SegmentAddress segment);

    /// <summary>As a replica, for the primary's scrub: every block's checksum and the blocks that fail theirs.</summary>
    [Alias("CheckSegment")]
    Task<SegmentCheck> CheckSegmentAsync(long epoch, SegmentAddress segment);

    /// <summary>As a replica, for the primary: blocks read and checked (a copy to repair another replica's bad blocks from).</summary>
    [Alias("ReadForRepair")]
    Task<SegmentData> ReadForRepairAsync(SegmentRead request);

    /// <summary>As a replica, for the primary's scrub: take these blocks as this host's copy.</summary>
    [Alias("RepairBlocks")]
    Task RepairBlocksAsync(BlockRepair repair);

    /// <summary>Reads the raw bytes one replica holds, bypassing the primary; for verification tools and tests.</summary>
    [Alias("ReadLocal")]
    [Requires(Access.ClusterAdmin)]
    Task<SegmentData> ReadLocalAsync(SegmentAddress segment, int offset, int length);
}
