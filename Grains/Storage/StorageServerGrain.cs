using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Orleans.Streams;
using OrleansStorage.Auth;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Hosting;
using OrleansStorage.Identity;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Placement;
using OrleansStorage.Qos;
using OrleansStorage.Segments;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Storage;

/// <summary>
/// The storage server of one host. Reentrant so that many requests and their file I/O are in
/// flight at once; every state read before an await is re-checked after it (the map may have
/// moved on), and overlapping writes are ordered per segment by <see cref="SegmentWriteOrder"/>.
/// </summary>
[Reentrant]
[GrainType("ostor-storage-server")]
[HostPinnedPlacement]
public sealed partial class StorageServerGrain(
    SegmentStore store,
    HostDisk disk,
    IOptions<StorageServerOptions> options,
    IClusterMapPushFilter pushFilter,
    IReplicaWriteFaults faults,
    RecoveryLog recoveryLog,
    ILocalSiloDetails silo,
    IOptions<LeaseOptions> leaseOptions,
    TimeProvider clock,
    AccessControl access,
    VolumeQosGate qos,
    DataPortServer dataPort,
    DataPortClient peers,
    HostMetrics hostMetrics,
    DataPathMetrics dataPathMetrics,
    ILogger<StorageServerGrain> logger) : Grain, IStorageServerGrain
{
    private readonly SegmentWriteOrder _writeOrder = new();
    private ClusterMap _map = ClusterMap.Empty;

    /// <summary>The last map saved on this host's disk: no older map is ever adopted again (the database was restored from an old copy?).</summary>
    private ClusterMap? _savedMap;
    private string _hostId = "";
    private Task? _catchUp;
    private bool _activated;

    private IManagementServiceGrain Management => GrainFactory.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey);

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _hostId = this.GetPrimaryKeyString();
        if (!string.Equals(_hostId, options.Value.HostId, StringComparison.Ordinal))
        {
            // Placement must put us on our own host; refuse rather than serve another host's disk.
            throw new HostUnavailableException(_hostId, $"activation reached host '{options.Value.HostId}' instead");
        }

        _savedMap = disk.LoadMap();
        StartLeases();
        StartScrub();
        await AdoptAsync(await Management.GetMapAsync(), MapTrigger.Activation);
        if (!_map.IsUnformed)
        {
            RemoveReleasedData(_map);
            await RepairSuspectSegmentsAsync();
        }
        _activated = true;

        var stream = this.GetStreamProvider(ClusterMapStream.ProviderName)
            .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
        var handles = await stream.GetAllSubscriptionHandles();
        if (handles.Count == 0)
        {
            await stream.SubscribeAsync(OnMapPushedAsync);
        }
        else
        {
            await handles[0].ResumeAsync(OnMapPushedAsync);
            foreach (var extra in handles.Skip(1))
            {
                await extra.UnsubscribeAsync();
            }
        }
        OpenDataDoor();
        Log.StorageServerActivated(logger, _hostId, silo.SiloAddress.ToString(), _map.Epoch, store.VolumesRoot);
    }

    public async Task<SegmentData> ReadAsync(SegmentRead request)
    {
        var volume = await AdmitReadAsync(request);
        var buffer = new byte[request.Length];
        await ReadAdmittedAsync(request, volume, buffer);
        return new SegmentData(buffer);
    }

    /// <summary>A client read's admission: epoch, placement, lease, capability, range, then its volume's QoS.</summary>
    private async Task<VolumeInfo> AdmitReadAsync(SegmentRead request)
    {
        _lastClientRequest = clock.GetTimestamp();
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Read, "read");
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Length);
        await qos.WaitAsync(volume.VolumeId, write: false, request.Length);
        return volume;
    }

    private async Task ReadAdmittedAsync(SegmentRead request, VolumeInfo volume, Memory<byte> buffer)
    {
        ThrowIfReadsThrough(volume, request.Segment);
        try
        {
            await store.ReadAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, buffer);
        }
        catch (CorruptBlocksException)
        {
            await ReadRepairingAsync(request, volume, buffer);
        }
    }

    public async Task<DataExtent[]> GetAllocationAsync(SegmentRead request)
    {
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Read, "read the allocation of");
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Length);
        ThrowIfReadsThrough(volume, request.Segment);
        return store.DataExtents(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Length);
    }

    public async Task WriteAsync(SegmentWrite request)
    {
        if (request.Data.Length > DataPortLimits.MaxPayload)
        {
            // Its forwards go over the data ports, which take no more in one request.
            throw new InvalidRequestException($"a write of {request.Data.Length} bytes; one request writes at most {DataPortLimits.MaxPayload}");
        }
        _lastClientRequest = clock.GetTimestamp();
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Write, "write");
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Data.Length);
        ThrowIfReadsThrough(volume, request.Segment);
        // Before the write turn: a write held back by its volume's limits holds up no other.
        await qos.WaitAsync(volume.VolumeId, write: true, request.Data.Length);
        await PreserveForSnapshotAsync(request.Segment, request.Epoch);
        using var turn = await _writeOrder.EnterAsync(request.Segment, request.Offset, request.Data.Length);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        // The wait above may have spanned a map change: decide again on the current map.
        var (_, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Primary);
        // Counted in flight from its version to its end: until then no flush may call the segment clean.
        using var change = await store.BeginChangeAsync(request.Segment);
        var version = await store.NextVersionAsync(request.Segment, _map.Epoch);
        var local = WithOwnRepairAsync(volume, group, () => store.WriteAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Data, request.ForceUnitAccess).AsTask());
        var header = new DataRequestHeader(DataOp.ReplicaWrite, 0, request.Epoch, request.Segment.VolumeId, request.Segment.SegmentIndex,
            request.Offset, request.Data.Length, version, request.ForceUnitAccess, 0);
        await ForwardAsync(group, request.Segment, new ByteRange(request.Offset, request.Data.Length), version, local,
            (host, carried) => ForwardOverDataPortAsync(host, header with { Version = carried }, request.Data));
    }

    public async Task TrimAsync(SegmentTrim request)
    {
        _lastClientRequest = clock.GetTimestamp();
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Write, "trim");
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Length);
        ThrowIfReadsThrough(volume, request.Segment);
        await qos.WaitAsync(volume.VolumeId, write: true, bytes: 0);
        await PreserveForSnapshotAsync(request.Segment, request.Epoch);
        using var turn = await _writeOrder.EnterAsync(request.Segment, request.Offset, request.Length);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        var (_, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Primary);
        // Counted in flight from its version to its end: until then no flush may call the segment clean.
        using var change = await store.BeginChangeAsync(request.Segment);
        var version = await store.NextVersionAsync(request.Segment, _map.Epoch);
        var local = WithOwnRepairAsync(volume, group, () => store.TrimAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Length).AsTask());
        var header = new DataRequestHeader(DataOp.ReplicaTrim, 0, request.Epoch, request.Segment.VolumeId, request.Segment.SegmentIndex,
            request.Offset, request.Length, version, false, 0);
        await ForwardAsync(group, request.Segment, new ByteRange(request.Offset, request.Length), version, local,
            (host, carried) => ForwardOverDataPortAsync(host, header with { Version = carried }, default));
    }

    public async Task ReplicaWriteAsync(SegmentWrite request)
    {
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Member);
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Data.Length);
        await faults.BeforeWriteTurnAsync(_hostId, request.Segment);
        // Ordered with this host's other writes and copies of the segment; a forward from a primary
        // deposed while it waited is rejected instead of landing after a copy read the segment.
        using var turn = await _writeOrder.EnterAsync(request.Segment, request.Offset, request.Data.Length);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        var (current, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Member);
        RequireSnapshotCopy(current, group, request.Segment);
        switch (faults.NextFault(_hostId))
        {
            case ReplicaWriteFault.Fail:
                throw new IOException($"host '{_hostId}' failed a replica write (injected fault)");
            case ReplicaWriteFault.RefuseAsStale:
                throw new StaleEpochException(request.Epoch, _map.Epoch + 1, _hostId);
            case ReplicaWriteFault.RefuseAsMisdirected:
                throw new MisdirectedRequestException(_hostId, volume.VolumeId, group.Index, _map.Epoch, "holds no replica (injected fault)");
        }
        try
        {
            await store.WriteAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Data, request.ForceUnitAccess);
        }
        catch (CorruptBlocksException bad)
        {
            await WriteOverBadCopyAsync(group, bad, () => store.WriteAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Data, request.ForceUnitAccess, verifyPartialBlocks: false).AsTask());
        }
        RecordReplicaVersion(group, request.Segment, new ByteRange(request.Offset, request.Data.Length), request.Version);
    }

    public async Task ReplicaTrimAsync(SegmentTrim request)
    {
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Member);
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Length);
        using var turn = await _writeOrder.EnterAsync(request.Segment, request.Offset, request.Length);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        var (current, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Member);
        RequireSnapshotCopy(current, group, request.Segment);
        try
        {
            await store.TrimAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Length);
        }
        catch (CorruptBlocksException bad)
        {
            await WriteOverBadCopyAsync(group, bad, () => store.TrimAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, request.Length, verifyPartialBlocks: false).AsTask());
        }
        RecordReplicaVersion(group, request.Segment, new ByteRange(request.Offset, request.Length), request.Version);
    }

    public async Task FlushAsync(long epoch, Guid volumeId)
    {
        await CheckEpochAsync(epoch);
        var volume = _map.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, _map.Epoch);
        access.Demand(volume, CapabilityLevel.Write, "flush");
        await store.FlushVolumeAsync(volumeId);
    }

    public async Task RefreshMapAsync(long epoch)
    {
        if (epoch > _map.Epoch)
        {
            await CatchUpAsync(epoch, MapTrigger.Refresh);
        }
    }

    public async Task PurgeVolumeAsync(Guid volumeId, long epoch)
    {
        if (_map.Epoch < epoch)
        {
            await CatchUpAsync(epoch, MapTrigger.Refresh);
        }
        if (_map.FindTombstone(volumeId) is null)
        {
            throw new InvalidRequestException($"volume {volumeId} is not deleted in the map at epoch {_map.Epoch}; refusing to remove its data");
        }
        store.DeleteVolume(volumeId);
        Log.VolumePurged(logger, _hostId, volumeId);
    }

    public Task<HostDiskReport> GetDiskReportAsync() =>
        Task.FromResult(new HostDiskReport(
            _hostId,
            disk.Superblock?.ClusterId ?? Guid.Empty,
            disk.LoadMap(),
            store.HighestVersion() >> SegmentVersions.EpochShift,
            [.. store.ListVolumes().Where(id => !store.IsSnapshot(id))]));

    public Task<StorageServerStatus> GetStatusAsync()
    {
        var (bytes, files) = store.Usage();
        return Task.FromResult(new StorageServerStatus(
            _hostId, _map.Epoch, bytes, files, silo.SiloAddress.ToString(),
            [.. _copies.Values.Select(run => run.Progress())], recoveryLog.Recent(),
            [.. _scrubs.Values], _blocksRepaired, _blocksLost, access.Refused, qos.Delayed, dataPathMetrics.VolumeTotals()));
    }

    public async Task<SegmentData> ReadLocalAsync(SegmentAddress segment, int offset, int length)
    {
        // A snapshot's copy is read by the snapshot's id, its size is its volume's.
        VolumeInfo? Find() => _map.FindVolume(segment.VolumeId) ?? _map.FindSnapshot(segment.VolumeId)?.Volume;
        if (Find() is null)
        {
            await CatchUpAsync(); // a volume newer than our map: its push may not have arrived yet
        }
        var volume = Find() ?? throw new VolumeNotFoundException(segment.VolumeId, _map.Epoch);
        EpochGate.CheckRange(volume, segment.SegmentIndex, offset, length);
        var buffer = new byte[length];
        try
        {
            await store.ReadAsync(segment, volume.SegmentSizeBytes, offset, buffer);
        }
        catch (CorruptBlocksException bad)
        {
            throw new DataCorruptException($"host '{_hostId}': {bad.Message}");
        }
        return new SegmentData(buffer);
    }

    /// <summary>A report to management that must not hold up the request that made it; a lost report is logged.</summary>
    private static void InBackground(Task report, Action<Exception> onFailure) =>
        report.ContinueWith(
            t => onFailure(t.Exception!),
            CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default).Ignore();

    /// <summary>The epoch protocol, then the placement check, then (for a primary) the lease, for one data request.</summary>
    private async ValueTask<(VolumeInfo Volume, PlacementGroup Group)> AdmitAsync(long requestEpoch, SegmentAddress segment, ReplicaRole role)
    {
        await CheckEpochAsync(requestEpoch);
        var admitted = EpochGate.Admit(_map, _hostId, segment, role);
        if (role != ReplicaRole.Primary || MayLead(admitted.Volume, admitted.Group))
        {
            return admitted;
        }
        await HoldLeaseAsync(requestEpoch, admitted.Volume, admitted.Group);
        return AdmitCurrent(requestEpoch, segment, role);
    }

    /// <summary>Admission without catching up or waiting: for re-checks after an await, where the epochs must still be equal and the lease still held.</summary>
    private (VolumeInfo Volume, PlacementGroup Group) AdmitCurrent(long requestEpoch, SegmentAddress segment, ReplicaRole role)
    {
        if (EpochGate.Judge(requestEpoch, _map.Epoch) != EpochVerdict.Current)
        {
            throw RejectStale(requestEpoch);
        }
        var admitted = EpochGate.Admit(_map, _hostId, segment, role);
        if (role == ReplicaRole.Primary && !MayLead(admitted.Volume, admitted.Group))
        {
            throw NoLease(requestEpoch, admitted.Volume, admitted.Group);
        }
        return admitted;
    }

    private async ValueTask CheckEpochAsync(long requestEpoch)
    {
        switch (EpochGate.Judge(requestEpoch, _map.Epoch))
        {
            case EpochVerdict.Current:
                return;
            case EpochVerdict.RequestStale:
                throw RejectStale(requestEpoch);
            case EpochVerdict.ServerBehind:
                Log.ServerBehind(logger, _hostId, _map.Epoch, requestEpoch);
                ReportMismatch(requestEpoch);
                await CatchUpAsync(requestEpoch);
                // Decide again on the pulled map: it may now be equal, or even past the request.
                switch (EpochGate.Judge(requestEpoch, _map.Epoch))
                {
                    case EpochVerdict.Current:
                        return;
                    case EpochVerdict.RequestStale:
                        throw RejectStale(requestEpoch);
                    default:
                        throw new StorageException(
                            $"request carried epoch {requestEpoch}, but the management service is at epoch {_map.Epoch}; the sender's map is not from this cluster");
                }
        }
    }

    private StaleEpochException RejectStale(long requestEpoch)
    {
        Log.StaleRequest(logger, _hostId, requestEpoch, _map.Epoch);
        ReportMismatch(requestEpoch);
        return new StaleEpochException(requestEpoch, _map.Epoch, _hostId);
    }

    /// <summary>
    /// Pulls the current map, sharing one pull among every caller waiting at the same time. A
    /// caller that finds a pull in flight waits for it, and pulls again if the map is still short
    /// of <paramref name="atLeastEpoch"/>: that pull may have been answered before the map moved
    /// to the epoch the caller heard of.
    /// </summary>
    private async Task CatchUpAsync(long atLeastEpoch = long.MaxValue, string trigger = MapTrigger.Request)
    {
        var pull = _catchUp;
        if (pull is { IsCompleted: false })
        {
            await pull;
            if (_map.Epoch >= atLeastEpoch)
            {
                return;
            }
        }
        if (_catchUp is null || _catchUp.IsCompleted || ReferenceEquals(_catchUp, pull))
        {
            _catchUp = PullAsync();
        }
        await _catchUp;

        async Task PullAsync() => await AdoptAsync(await Management.GetMapAsync(), trigger);
    }

    private void ReportMismatch(long requestEpoch)
    {
        // A lost report costs only a counter.
        InBackground(Management.ReportMismatchAsync(new EpochMismatch(_hostId, _map.Epoch, requestEpoch)), ex => Log.MismatchReportFailed(logger, ex, _hostId));
    }

    private async Task OnMapPushedAsync(ClusterMap map, StreamSequenceToken? token)
    {
        if (!await pushFilter.AcceptAsync(_hostId, map.Epoch))
        {
            hostMetrics.PushReceived("dropped");
            Log.PushDropped(logger, _hostId, map.Epoch);
            return;
        }
        // A push says that the map moved on; what it carries is not trusted (anyone with access to
        // the stream can publish): the persisted map is pulled from the management service.
        hostMetrics.PushReceived(map.Epoch > _map.Epoch ? "newer" : "known");
        if (map.Epoch > _map.Epoch)
        {
            await CatchUpAsync(map.Epoch, MapTrigger.Push);
        }
    }

    /// <summary>
    /// Takes a map from the management service if it is newer than ours; maps only ever move
    /// forward. A map of another cluster, or older than the one saved on this disk, is refused and
    /// changes nothing. The map is saved on disk before anything acts on it, so the disk always
    /// describes what it holds (and a lost database can be rebuilt from it).
    /// </summary>
    private Task AdoptAsync(ClusterMap map, string source)
    {
        if (map.IsUnformed || map.Epoch <= _map.Epoch)
        {
            return Task.CompletedTask;
        }
        if (_savedMap is { } saved && (map.Epoch < saved.Epoch || map.ClusterId != saved.ClusterId))
        {
            Log.MapRefused(logger, _hostId, map.Epoch, map.ClusterId, $"this disk saved the map of cluster {saved.ClusterId} at epoch {saved.Epoch}");
            return Task.CompletedTask;
        }
        try
        {
            disk.Claim(map.ClusterId);
        }
        catch (ForeignClusterException ex)
        {
            Log.MapRefused(logger, _hostId, map.Epoch, map.ClusterId, ex.Message);
            return Task.CompletedTask;
        }
        disk.SaveMap(map);
        _savedMap = map;
        var previous = _map;
        _map = map;
        qos.Adopt(map);
        SettleMissedForwards(map);
        hostMetrics.MapAdopted(map, _hostId, source);
        dataPathMetrics.MapAdopted(map);
        Log.MapApplied(logger, _hostId, previous.Epoch, map.Epoch, source);
        // Tells management at once that this host no longer serves the older epochs, so that groups
        // it stopped leading need not wait for its lease; and gets the lease for this epoch.
        RenewLeaseAsync().Ignore();
        foreach (var volume in map.Volumes)
        {
            var before = previous.FindVolume(volume.VolumeId);
            if (before is null)
            {
                continue;
            }
            var released = volume.PlacementGroups
                .Where(pg => before.PlacementGroups[pg.Index].References(_hostId) && !pg.References(_hostId))
                .Select(pg => pg.Index)
                .ToHashSet();
            RemoveGroups(volume, released);
        }
        PurgeTombstoned(map);
        if (!_snapshotsSwept || previous.Volumes.Any(v => v.Snapshots.Any(s => map.FindVolume(v.VolumeId)?.FindSnapshot(s.SnapshotId) is null)))
        {
            _snapshotsSwept = true; // once per activation (a drop cut short by a crash), then when a snapshot goes
            DropDeletedSnapshotsInBackground();
        }
        if (_activated && previous.IsUnformed)
        {
            // The first map after a recovery (this server activated on an empty database).
            RemoveReleasedData(map);
            InBackground(RepairSuspectSegmentsAsync(), ex => Log.SuspectRepairFailed(logger, ex, _hostId));
        }
        return Task.CompletedTask;
    }

    /// <summary>
    /// Drops what this host must not keep, by the map alone: tombstoned volumes, and segments of
    /// groups that no longer name this host (it was Out, or the group moved away; their data lives
    /// elsewhere now). A volume the map does not name at all is kept: absence is not deletion.
    /// </summary>
    private void RemoveReleasedData(ClusterMap map)
    {
        foreach (var volumeId in store.ListVolumes().Where(id => !store.IsSnapshot(id)))
        {
            if (map.FindVolume(volumeId) is { } volume)
            {
                RemoveGroups(volume, volume.PlacementGroups.Where(pg => !pg.References(_hostId)).Select(pg => pg.Index).ToHashSet());
            }
            else if (map.FindTombstone(volumeId) is null)
            {
                Log.UnknownVolumeKept(logger, _hostId, volumeId, map.Epoch);
            }
        }
        PurgeTombstoned(map);
    }

    /// <summary>Removes the files of every tombstoned volume this host is pending on, and confirms it to management.</summary>
    private void PurgeTombstoned(ClusterMap map)
    {
        var purged = new List<Guid>();
        foreach (var tombstone in map.Tombstones)
        {
            if (!tombstone.PendingHosts.Contains(_hostId))
            {
                continue;
            }
            if (store.DeleteVolume(tombstone.VolumeId))
            {
                Log.VolumePurged(logger, _hostId, tombstone.VolumeId);
            }
            purged.Add(tombstone.VolumeId);
        }
        if (purged.Count > 0)
        {
            InBackground(Management.ConfirmPurgedAsync(_hostId, [.. purged]), ex => Log.PurgeConfirmFailed(logger, ex, _hostId));
        }
    }

    private void RemoveGroups(VolumeInfo volume, HashSet<int> groups)
    {
        if (groups.Count == 0)
        {
            return;
        }
        var count = volume.PlacementGroups.Length;
        var removed = store.DeleteSegments(volume.VolumeId, segment => groups.Contains((int)(segment % count)));
        foreach (var snapshotId in store.SnapshotsOf(volume.VolumeId).ToList())
        {
            removed += store.DeleteSegments(snapshotId, segment => groups.Contains((int)(segment % count)));
        }
        if (removed > 0)
        {
            Log.GroupsReleased(logger, _hostId, volume.Name, groups.Count, removed);
        }
    }
}
