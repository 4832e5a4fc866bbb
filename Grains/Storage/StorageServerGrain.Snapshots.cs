using OrleansStorage.Auth;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Segments;

namespace OrleansStorage.Storage;

/// <summary>
/// Snapshots on the storage server (docs/snapshots.md). The first write to a segment after a
/// snapshot, at an epoch that has the snapshot in its map, copies the segment for it first: the
/// primary under the segment's whole-range turn, then every other replica from the same version
/// (or it is resynced). Reads of a snapshot look in its copies, then in later snapshots' copies,
/// then in the volume, under the read's turn, so a copy being made is never half seen.
/// </summary>
public sealed partial class StorageServerGrain
{
    /// <summary>
    /// As the primary, before a write or trim at <paramref name="requestEpoch"/> takes its turn:
    /// copies the segment for the newest snapshot if it has no copy yet, here and on every replica.
    /// </summary>
    private async Task PreserveForSnapshotAsync(SegmentAddress segment, long requestEpoch)
    {
        if (!NeedsCopy(_map.FindVolume(segment.VolumeId), segment, out _))
        {
            return;
        }
        var size = _map.FindVolume(segment.VolumeId)!.SegmentSizeBytes;
        using var turn = await _writeOrder.EnterAsync(segment, 0, size);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        var (volume, group) = AdmitCurrent(requestEpoch, segment, ReplicaRole.Primary);
        if (!NeedsCopy(volume, segment, out var snapshot))
        {
            return; // a write that waited for the same turn made it
        }
        var version = store.Version(segment);
        var local = WithOwnRepairAsync(volume, group, () => store.PreserveAsync(segment, Namespace(volume, snapshot), volume.SegmentSizeBytes));
        var header = new DataRequestHeader(DataOp.ReplicaPreserve, 0, requestEpoch, segment.VolumeId, segment.SegmentIndex, 0, 0, version, false, 0);
        await ForwardAsync(group, segment, range: null, version, local, (host, carried) => ForwardOverDataPortAsync(host, header with { Version = carried }, default));
    }

    /// <summary>The volume has a snapshot at this map's epoch and the segment has no copy for it here.</summary>
    private bool NeedsCopy(VolumeInfo? volume, SegmentAddress segment, out SnapshotInfo snapshot)
    {
        snapshot = null!;
        if (volume is null || volume.Snapshots.IsEmpty || volume.NewestSnapshotAt(_map.Epoch) is not { } newest)
        {
            return false;
        }
        snapshot = newest;
        return !store.HasFile(new SegmentAddress(newest.SnapshotId, segment.SegmentIndex));
    }

    private static SnapshotNamespace Namespace(VolumeInfo volume, SnapshotInfo snapshot) =>
        new(snapshot.SnapshotId, volume.VolumeId, snapshot.Epoch);

    /// <summary>
    /// As a replica: the primary copied the segment for the current snapshot from its version
    /// <see cref="SegmentPreserve.Version"/>. A replica at the same version holds the same bytes and
    /// copies its own. One that differs cannot make a true copy: an acting replica, or a pending
    /// one whose segment the fill installed or confirmed, keeps one marked unknown (so a resync
    /// replaces it) and fails the forward, so the primary reports it and it is resynced; a pending
    /// replica whose segment the fill has still to go over makes none (the fill brings the copy).
    /// </summary>
    public async Task ReplicaPreserveAsync(SegmentPreserve request)
    {
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Member);
        using var turn = await _writeOrder.EnterAsync(request.Segment, 0, volume.SegmentSizeBytes);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        var (current, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Member);
        var snapshot = current.NewestSnapshotAt(_map.Epoch)
            ?? throw new InvalidRequestException($"volume '{current.Name}' has no snapshot at epoch {_map.Epoch}");
        var copy = new SegmentAddress(snapshot.SnapshotId, request.Segment.SegmentIndex);
        var installed = group.Contains(_hostId) || InstalledFor(current.VolumeId, group).Segments.Contains(request.Segment.SegmentIndex);
        if (store.HasFile(copy))
        {
            if (store.Version(copy) != request.Version && installed)
            {
                throw Diverged(current, request, snapshot, store.Version(copy));
            }
            return;
        }
        var ours = store.Version(request.Segment);
        var same = ours == request.Version && ours != SegmentVersions.Unknown;
        if (!same && !installed)
        {
            return;
        }
        await store.PreserveAsync(request.Segment, Namespace(current, snapshot), current.SegmentSizeBytes, same ? null : SegmentVersions.Unknown);
        if (!same && installed)
        {
            throw Diverged(current, request, snapshot, ours);
        }
    }

    private StorageException Diverged(VolumeInfo volume, SegmentPreserve request, SnapshotInfo snapshot, long ours) =>
        new($"host '{_hostId}' holds segment {request.Segment.SegmentIndex} of volume '{volume.Name}' at version {ours}, the primary copied version {request.Version} for snapshot '{snapshot.Name}': it must be resynced");

    /// <summary>
    /// As a replica, before applying a forwarded write or trim: the segment must have its copy for
    /// the current snapshot (the primary's preserve comes first). Missing means that preserve
    /// failed here: refuse, so this replica is resynced rather than lose the snapshot's data. A
    /// pending replica whose copy of the segment is still to come needs none: the copy brings it.
    /// </summary>
    private void RequireSnapshotCopy(VolumeInfo volume, PlacementGroup group, SegmentAddress segment)
    {
        if (!NeedsCopy(volume, segment, out var snapshot))
        {
            return;
        }
        if (group.Contains(_hostId) || InstalledFor(volume.VolumeId, group).Segments.Contains(segment.SegmentIndex))
        {
            throw new StorageException($"host '{_hostId}' has no copy of segment {segment.SegmentIndex} of volume '{volume.Name}' for snapshot '{snapshot.Name}': it must be resynced");
        }
    }

    private async Task ReadSnapshotIntoAsync(SegmentRead request, Memory<byte> destination)
    {
        var (volume, _, segment) = await AdmitSnapshotAsync(request);
        await qos.WaitAsync(volume.VolumeId, write: false, request.Length);
        using var turn = await _writeOrder.EnterAsync(segment, request.Offset, request.Length);
        var source = SnapshotSource(volume, request);
        ThrowIfReadsThrough(volume, source);
        try
        {
            await store.ReadAsync(source, volume.SegmentSizeBytes, request.Offset, destination);
        }
        catch (CorruptBlocksException bad)
        {
            throw new DataCorruptException($"host '{_hostId}': {bad.Message}");
        }
    }

    private async Task<DataExtent[]> GetSnapshotAllocationAsync(SegmentRead request)
    {
        var (volume, _, segment) = await AdmitSnapshotAsync(request);
        using var turn = await _writeOrder.EnterAsync(segment, request.Offset, request.Length);
        var source = SnapshotSource(volume, request);
        ThrowIfReadsThrough(volume, source);
        return store.DataExtents(source, volume.SegmentSizeBytes, request.Offset, request.Length);
    }

    /// <summary>A snapshot read's admission: the volume's primary, lease and capability, as a read of the volume.</summary>
    private async Task<(VolumeInfo Volume, SnapshotInfo Snapshot, SegmentAddress Segment)> AdmitSnapshotAsync(SegmentRead request)
    {
        _lastClientRequest = clock.GetTimestamp();
        await CheckEpochAsync(request.Epoch);
        var (volume, snapshot) = _map.FindSnapshot(request.Segment.VolumeId)
            ?? throw VolumeNotFoundException.FromMessage($"no snapshot with id {request.Segment.VolumeId} at epoch {_map.Epoch}");
        var segment = new SegmentAddress(volume.VolumeId, request.Segment.SegmentIndex);
        (volume, _) = await AdmitAsync(request.Epoch, segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Read, "read");
        EpochGate.CheckRange(volume, segment.SegmentIndex, request.Offset, request.Length);
        return (volume, snapshot, segment);
    }

    /// <summary>Where the snapshot's bytes of the segment are here: its own copy, else the first later snapshot's, else the volume's own segment.</summary>
    private SegmentAddress SnapshotSource(VolumeInfo volume, SegmentRead request)
    {
        var snapshot = volume.FindSnapshot(request.Segment.VolumeId)!;
        foreach (var candidate in volume.ReadOrder(snapshot))
        {
            var copy = new SegmentAddress(candidate.SnapshotId, request.Segment.SegmentIndex);
            if (store.HasFile(copy))
            {
                return copy;
            }
        }
        return new SegmentAddress(volume.VolumeId, request.Segment.SegmentIndex);
    }

    public async Task<long[]> GetImageVersionsAsync(long epoch, Guid volumeId, int groupIndex, Guid snapshotId)
    {
        await CheckEpochAsync(epoch);
        var volume = _map.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, _map.Epoch);
        access.Demand(volume, CapabilityLevel.Read, "compare the snapshots of");
        var snapshot = snapshotId == Guid.Empty ? null
            : volume.FindSnapshot(snapshotId) ?? throw VolumeNotFoundException.FromMessage($"volume '{volume.Name}' has no snapshot with id {snapshotId} at epoch {_map.Epoch}");
        var versions = new List<long>();
        foreach (var index in SegmentsOf(volume, groupIndex))
        {
            var segment = new SegmentAddress(volumeId, index);
            // Under the segment's turn: a copy being made, or a write in flight, is seen whole or not at all.
            using var turn = await _writeOrder.EnterAsync(segment, 0, volume.SegmentSizeBytes);
            versions.Add(snapshot is null ? store.Version(segment) : store.Version(SnapshotSource(volume, new SegmentRead(epoch, new SegmentAddress(snapshotId, index), 0, 0))));
        }
        return [.. versions];
    }

    public async Task<long> GetSnapshotUsageAsync(long epoch, Guid volumeId, int groupIndex, Guid snapshotId)
    {
        await CheckEpochAsync(epoch);
        var volume = _map.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, _map.Epoch);
        access.Demand(volume, CapabilityLevel.Read, "measure the snapshots of");
        var snapshot = volume.FindSnapshot(snapshotId) ?? throw VolumeNotFoundException.FromMessage($"volume '{volume.Name}' has no snapshot with id {snapshotId} at epoch {_map.Epoch}");
        var older = volume.Snapshots.LastOrDefault(s => s.Epoch < snapshot.Epoch);
        long bytes = 0;
        foreach (var index in SegmentsOf(volume, groupIndex))
        {
            var copy = new SegmentAddress(snapshotId, index);
            // A copy the snapshot before reads too (it has none of its own) passes to it on delete: not this one's alone.
            if (store.HasFile(copy) && (older is null || store.HasFile(new SegmentAddress(older.SnapshotId, index))))
            {
                bytes += store.AllocatedBytes(copy);
            }
        }
        return bytes;
    }

    public async Task<SnapshotCopyVersions[]> GetSnapshotCopyVersionsAsync(long epoch, Guid volumeId, int groupIndex)
    {
        await CheckEpochAsync(epoch);
        var volume = _map.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, _map.Epoch);
        return [.. volume.Snapshots.Select(snapshot => new SnapshotCopyVersions(
            snapshot.SnapshotId,
            [.. SegmentsOf(volume, groupIndex).Select(index => CopyVersion(snapshot.SnapshotId, index))]))];
    }

    private long CopyVersion(Guid snapshotId, long index)
    {
        var copy = new SegmentAddress(snapshotId, index);
        return store.HasFile(copy) ? store.Version(copy) : SnapshotCopyVersions.NoCopy;
    }

    public async Task InstallSnapshotCopyAsync(SnapshotCopyImage image)
    {
        var segment = new SegmentAddress(image.VolumeId, image.SegmentIndex);
        var (volume, _) = await AdmitAsync(image.Epoch, segment, ReplicaRole.Pending);
        using var turn = await _writeOrder.EnterAsync(segment, 0, volume.SegmentSizeBytes);
        (volume, _) = AdmitCurrent(image.Epoch, segment, ReplicaRole.Pending);
        var snapshot = volume.FindSnapshot(image.SnapshotId)
            ?? throw new InvalidRequestException($"volume '{volume.Name}' has no snapshot with id {image.SnapshotId} at epoch {_map.Epoch}");
        if (image.Remove)
        {
            store.PassDown(image.SnapshotId, previous: null, image.SegmentIndex);
            return;
        }
        var copy = new SegmentAddress(image.SnapshotId, image.SegmentIndex);
        await store.InstallSnapshotCopyAsync(copy, Namespace(volume, snapshot), volume.SegmentSizeBytes, image.Extents, image.Bytes, image.Version);
    }

    /// <summary>
    /// As a primary filling a replica, under the segment's whole-range turn: makes every
    /// snapshot's copy of the segment there agree with ours (sent where the versions differ, or
    /// every one we hold for a new replica; dropped where we hold none). A copy of ours whose
    /// version is unknown never replaces the target's: where that one is known, we take it. Before
    /// the segment itself, so a write forwarded after the turn finds its snapshot copy in place.
    /// </summary>
    private async Task<(int Bytes, int Copies)> CopySnapshotCopiesAsync(CopyRun run, IStorageServerGrain target, VolumeInfo volume, SegmentAddress segment, IReadOnlyDictionary<Guid, long> theirs)
    {
        var sent = 0;
        var copies = 0;
        foreach (var snapshot in volume.Snapshots)
        {
            var ours = CopyVersion(snapshot.SnapshotId, segment.SegmentIndex);
            var their = theirs.GetValueOrDefault(snapshot.SnapshotId, SnapshotCopyVersions.NoCopy);
            var copy = new SegmentAddress(snapshot.SnapshotId, segment.SegmentIndex);
            var action = SnapshotCopyPlan.Decide(ours, their, run.Job.Resync);
            if (ours == SegmentVersions.Unknown)
            {
                Log.SnapshotCopyUnknown(logger, _hostId, snapshot.SnapshotId, segment.SegmentIndex, action switch
                {
                    SnapshotCopyAction.TakeTheirs => $"taking the copy of '{run.Job.TargetHostId}' instead",
                    SnapshotCopyAction.Send => $"sent to '{run.Job.TargetHostId}', which holds none, still unknown",
                    _ => $"'{run.Job.TargetHostId}' holds one of unknown version too",
                });
            }
            if (action == SnapshotCopyAction.Nothing)
            {
                continue;
            }
            if (action == SnapshotCopyAction.TakeTheirs)
            {
                var good = await AtCurrentEpochAsync(run, epoch => target.ReadForRepairAsync(new SegmentRead(epoch, copy, 0, volume.SegmentSizeBytes)));
                var (theirExtents, theirBytes) = SegmentStore.SparseImage(good.Bytes.Span);
                await store.InstallSnapshotCopyAsync(copy, Namespace(volume, snapshot), volume.SegmentSizeBytes, theirExtents, theirBytes, their);
                continue;
            }
            var (extents, bytes) = action == SnapshotCopyAction.Remove ? ([], []) : await store.ReadImageAsync(copy, volume.SegmentSizeBytes);
            var image = new SnapshotCopyImage(0, volume.VolumeId, snapshot.SnapshotId, segment.SegmentIndex, ours, extents, bytes, Remove: action == SnapshotCopyAction.Remove);
            await AtCurrentEpochAsync(run, async epoch =>
            {
                await target.InstallSnapshotCopyAsync(image with { Epoch = epoch });
                return true;
            });
            sent += bytes.Length;
            copies++;
        }
        return (sent, copies);
    }

    private Task _snapshotDrops = Task.CompletedTask;
    private bool _snapshotsSwept;

    /// <summary>One drop after another: two at once could pass a copy to a snapshot the other is dropping.</summary>
    private void DropDeletedSnapshotsInBackground()
    {
        var before = _snapshotDrops;
        _snapshotDrops = DropAfterAsync();

        async Task DropAfterAsync()
        {
            await before;
            try
            {
                await DropDeletedSnapshotsAsync();
            }
            catch (Exception ex)
            {
                Log.SnapshotDropFailed(logger, ex, _hostId);
            }
        }
    }

    /// <summary>
    /// Drops the copies of snapshots the map no longer has, oldest first: each segment's copy
    /// passes to the snapshot before it when that one has none of its own (its reads looked here),
    /// else it is removed. Under each segment's turn, so no read sees it in neither place.
    /// </summary>
    private async Task DropDeletedSnapshotsAsync()
    {
        foreach (var gone in store.ListSnapshots().OrderBy(s => s.Epoch))
        {
            if (_map.FindVolume(gone.VolumeId) is not { } volume || volume.FindSnapshot(gone.SnapshotId) is not null)
            {
                continue; // a deleted volume's snapshots go with it
            }
            var before = volume.Snapshots.LastOrDefault(s => s.Epoch < gone.Epoch);
            SnapshotNamespace? previous = before is null ? null : Namespace(volume, before);
            int passed = 0, removed = 0;
            foreach (var index in store.ListSegments(gone.SnapshotId))
            {
                using var turn = await _writeOrder.EnterAsync(new SegmentAddress(volume.VolumeId, index), 0, volume.SegmentSizeBytes);
                if (store.PassDown(gone.SnapshotId, previous, index))
                {
                    passed++;
                }
                else
                {
                    removed++;
                }
            }
            store.RemoveSnapshot(gone.SnapshotId);
            Log.SnapshotDropped(logger, _hostId, gone.SnapshotId, gone.VolumeId, passed, removed);
        }
    }
}
