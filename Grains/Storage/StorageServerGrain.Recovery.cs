using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Segments;

namespace OrleansStorage.Storage;

/// <summary>
/// Filling pending replicas. As a group's primary this server copies segments to a pending
/// replica while writes go on: each segment is read and installed under the segment's full-range
/// write turn, so no write to it is in flight meanwhile, and every later write is forwarded to the
/// pending replica too. As a pending replica it installs the copies.
/// </summary>
public sealed partial class StorageServerGrain
{
    private readonly Dictionary<CopyJob, CopyRun> _copies = [];
    private bool _deactivating;
    private readonly Dictionary<(Guid VolumeId, int Group), InstalledSegments> _installed = [];
    private SemaphoreSlim? _copySlots;
    private CopyBackoff? _copyBackoff;
    private BandwidthLimiter? _bandwidth;

    public async Task EnsureCopiesAsync(long epoch, CopyJob[] jobs)
    {
        if (_map.Epoch < epoch)
        {
            await CatchUpAsync(epoch, MapTrigger.Refresh);
        }
        if (_deactivating)
        {
            return;
        }
        _copySlots ??= new SemaphoreSlim(options.Value.MaxConcurrentCopies);
        _bandwidth ??= new BandwidthLimiter(options.Value.RecoveryBandwidthBytesPerSecond, TimeProvider.System);
        _copyBackoff ??= new CopyBackoff(clock);
        foreach (var job in jobs)
        {
            if (_copies.ContainsKey(job) || StillCopying(job, _map.Epoch) is not null || !_copyBackoff.MayStart(job))
            {
                continue;
            }
            var run = new CopyRun(job, _hostId, _map.Epoch, clock.GetUtcNow());
            _copies[job] = run;
            run.Completion = RunCopyAsync(run);
        }
    }

    public async Task<long[]> GetSegmentVersionsAsync(long epoch, Guid volumeId, int groupIndex)
    {
        await CheckEpochAsync(epoch);
        var volume = _map.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, _map.Epoch);
        return [.. SegmentsOf(volume, groupIndex).Select(index => store.Version(new SegmentAddress(volumeId, index)))];
    }

    public async Task InstallSegmentAsync(SegmentImage image)
    {
        var (volume, _) = await AdmitAsync(image.Epoch, image.Segment, ReplicaRole.Pending);
        using var turn = await _writeOrder.EnterAsync(image.Segment, 0, volume.SegmentSizeBytes);
        var (_, group) = AdmitCurrent(image.Epoch, image.Segment, ReplicaRole.Pending);
        await store.InstallImageAsync(image.Segment, volume.SegmentSizeBytes, image.Extents, image.Bytes, image.Version);
        _missedForwards.Forget(image.Segment, _hostId); // whatever this host held that the primary lacked is gone
        InstalledFor(volume.VolumeId, group).Segments.Add(image.Segment.SegmentIndex);
    }

    /// <summary>
    /// As a pending replica: the primary, holding the segment's write turn, found our version of it
    /// equal to its own and copies nothing. If it still is, the segment counts as installed (the
    /// forwards that follow raise its version, the preserves copy it as on an acting replica);
    /// false tells the primary to copy it after all.
    /// </summary>
    public async Task<bool> ConfirmSegmentAsync(long epoch, SegmentAddress segment, long version)
    {
        var (volume, _) = await AdmitAsync(epoch, segment, ReplicaRole.Pending);
        using var turn = await _writeOrder.EnterAsync(segment, 0, volume.SegmentSizeBytes);
        var (_, group) = AdmitCurrent(epoch, segment, ReplicaRole.Pending);
        if (version == SegmentVersions.Unknown || store.Version(segment) != version || _missedForwards.Has(segment, _hostId))
        {
            return false;
        }
        InstalledFor(volume.VolumeId, group).Segments.Add(segment.SegmentIndex);
        return true;
    }

    /// <summary>
    /// A replica records the version of a write it applied. A pending replica does so only for
    /// segments already installed (or confirmed) by the copy: for the others, raising the version
    /// would make a segment look current when the writes it missed while away are still to be
    /// copied. The unknown version comes from a primary that knows this replica lacks a write it
    /// missed: its version becomes unknown, so it never looks equal again until a copy replaces it.
    /// So does this host's own version when it led the group before and holds a write that failed
    /// on others, and this forward does not rewrite those bytes (<see cref="SettleMissedForwards"/>).
    /// </summary>
    private void RecordReplicaVersion(PlacementGroup group, SegmentAddress segment, ByteRange range, long version)
    {
        if (_missedForwards.VersionFor(segment, _hostId, range, version) is var carried && carried == SegmentVersions.Unknown)
        {
            store.ForgetVersion(segment);
            _missedForwards.Delivered(segment, _hostId, range, carried);
            if (version != SegmentVersions.Unknown)
            {
                ReportReplica(group, segment, _hostId, $"it holds a write to segment {segment.SegmentIndex} that failed on other replicas while it led the group; its version is unknown now");
            }
            return;
        }
        _missedForwards.Delivered(segment, _hostId, range, carried);
        if (group.Contains(_hostId) || InstalledFor(segment.VolumeId, group).Segments.Contains(segment.SegmentIndex))
        {
            store.RaiseVersion(segment, version);
        }
    }

    private InstalledSegments InstalledFor(Guid volumeId, PlacementGroup group)
    {
        var since = group.FindPending(_hostId)?.SinceEpoch ?? -1;
        if (!_installed.TryGetValue((volumeId, group.Index), out var installed) || installed.SinceEpoch != since)
        {
            // A new stint as pending replica: what an earlier one installed proves nothing now.
            installed = new InstalledSegments(since, []);
            _installed[(volumeId, group.Index)] = installed;
        }
        return installed;
    }

    private async Task RunCopyAsync(CopyRun run)
    {
        await Task.Yield(); // return to EnsureCopiesAsync's caller first
        await _copySlots!.WaitAsync();
        var job = run.Job;
        Log.CopyStarted(logger, _hostId, job.TargetHostId, job.VolumeId, job.GroupIndex, job.Resync);
        try
        {
            var volume = _map.FindVolume(job.VolumeId) ?? throw new VolumeNotFoundException(job.VolumeId, _map.Epoch);
            var segments = SegmentsOf(volume, job.GroupIndex).ToList();
            var target = GrainFactory.GetGrain<IStorageServerGrain>(job.TargetHostId);
            var targetVersions = await AtCurrentEpochAsync(run, epoch => target.GetSegmentVersionsAsync(epoch, job.VolumeId, job.GroupIndex));
            var targetCopies = volume.Snapshots.IsEmpty ? [] : await AtCurrentEpochAsync(run, epoch => target.GetSnapshotCopyVersionsAsync(epoch, job.VolumeId, job.GroupIndex));
            run.SegmentsTotal = segments.Count;
            CopiesChanged();
            for (var i = 0; i < segments.Count; i++)
            {
                var segment = new SegmentAddress(job.VolumeId, segments[i]);
                await faults.BeforeFillSegmentAsync(_hostId, segment);
                ThrowIfAbandoned(run);
                var ours = store.Version(segment);
                var theirs = i < targetVersions.Length ? targetVersions[i] : 0;
                // An unknown version (a suspect segment, ours or theirs) never proves two copies equal.
                var differs = ours != theirs || ours == SegmentVersions.Unknown;
                var theirCopies = targetCopies.ToDictionary(c => c.SnapshotId, c => i < c.Versions.Length ? c.Versions[i] : SnapshotCopyVersions.NoCopy);
                // A new replica gets every segment the primary has, whatever the versions say.
                var copySegment = differs || (!job.Resync && store.HasFile(segment));
                // Every segment, even one that looks equal: the target must count it as installed
                // (or get it), and a snapshot taken since the fill began may need its copy.
                if (await CopySegmentAsync(run, target, volume, segment, copySegment, theirCopies) is { } bytes)
                {
                    run.SegmentsCopied++;
                    run.BytesCopied += bytes;
                    hostMetrics.SegmentCopied(bytes);
                    await _bandwidth!.WaitAsync(bytes);
                }
                run.SegmentsDone++;
                CopiesChanged();
            }
            ThrowIfAbandoned(run);
            await Management.CopyCompletedAsync(new CopyCompletion(job, _hostId, run.StartEpoch));
            FinishCopy(run, failure: null);
        }
        catch (Exception ex)
        {
            FinishCopy(run, ex.Message);
        }
        finally
        {
            _copySlots.Release();
        }
    }

    /// <summary>
    /// One segment, with no write to it in flight: its snapshots' copies first (those of every
    /// snapshot the map has now), then the segment, read and installed, or, when it looked equal,
    /// confirmed: the target counts it as installed if its version still equals ours, so that
    /// forwarded writes raise it from now on exactly as on an acting replica; else it is copied.
    /// Returns the bytes sent, null when nothing was.
    /// </summary>
    private async Task<int?> CopySegmentAsync(CopyRun run, IStorageServerGrain target, VolumeInfo volume, SegmentAddress segment, bool copySegment, IReadOnlyDictionary<Guid, long> theirCopies)
    {
        using var turn = await _writeOrder.EnterAsync(segment, 0, volume.SegmentSizeBytes);
        ThrowIfAbandoned(run);
        volume = _map.FindVolume(segment.VolumeId) ?? volume;
        var (sent, copies) = await CopySnapshotCopiesAsync(run, target, volume, segment, theirCopies);
        var version = store.Version(segment);
        if (!copySegment && await AtCurrentEpochAsync(run, epoch => target.ConfirmSegmentAsync(epoch, segment, version)))
        {
            _missedForwards.Forget(segment, run.Job.TargetHostId);
            return copies > 0 ? sent : null;
        }
        // Bad blocks here are repaired from another acting replica first: a copy never spreads them.
        DataExtent[] extents = [];
        byte[] bytes = [];
        var group = volume.PlacementGroupOf(segment.SegmentIndex);
        await WithOwnRepairAsync(volume, group, async () => (extents, bytes) = await store.ReadImageAsync(segment, volume.SegmentSizeBytes));
        await AtCurrentEpochAsync(run, async epoch =>
        {
            await target.InstallSegmentAsync(new SegmentImage(epoch, segment, version, extents, bytes));
            return true;
        });
        _missedForwards.Forget(segment, run.Job.TargetHostId);
        return sent + bytes.Length;
    }

    /// <summary>
    /// A call to the target at our epoch; if the target is ahead, catch up, check the copy still
    /// stands, and call again (a map change in the middle of a copy is normal: other hosts come and go).
    /// </summary>
    private async Task<T> AtCurrentEpochAsync<T>(CopyRun run, Func<long, Task<T>> call)
    {
        for (var attempt = 1; ; attempt++)
        {
            ThrowIfAbandoned(run);
            try
            {
                return await call(_map.Epoch);
            }
            catch (StaleEpochException) when (attempt < 5)
            {
                await CatchUpAsync();
            }
        }
    }

    /// <summary>
    /// Copies run beside the grain's turns, so a deactivation (Orleans deactivates grains whose
    /// directory entry lived on a silo that died) must stop them and wait: a copy left running
    /// would install segments outside the next activation's write ordering.
    /// </summary>
    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        _deactivating = true;
        CloseDataDoor();
        var running = _copies.Values.Select(run => run.Completion).ToArray();
        await Task.WhenAll(running).WaitAsync(cancellationToken)
            .ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ContinueOnCapturedContext);
        await ReportMissedForwardsAsync(cancellationToken);
        await base.OnDeactivateAsync(reason, cancellationToken);
    }

    /// <summary>
    /// What the replicas missed lives only in this activation's memory: before it goes, each
    /// replica that may differ for a recorded miss is reported for a resync. A segment whose
    /// reports could not all be made is kept suspect by the store (for the next activation, and
    /// after a restart: no clean shutdown), so it is compared with its replicas then.
    /// </summary>
    private async Task ReportMissedForwardsAsync(CancellationToken cancellationToken)
    {
        foreach (var (segment, hostId) in _missedForwards.Records())
        {
            var volume = _map.FindVolume(segment.VolumeId);
            if (volume is null || segment.SegmentIndex >= volume.SegmentCount)
            {
                continue;
            }
            var group = volume.PlacementGroupOf(segment.SegmentIndex);
            IEnumerable<string> reported = hostId != _hostId ? [hostId]
                : group.Primary == _hostId ? group.ForwardTargets
                : [_hostId];
            try
            {
                foreach (var replica in reported.Where(group.Receives).ToList())
                {
                    var report = new ReplicaFailure(segment.VolumeId, group.Index, replica, _hostId,
                        $"it may differ from '{_hostId}' in segment {segment.SegmentIndex} by a write it missed, and '{_hostId}' is deactivating", _map.Epoch);
                    await Management.ReportReplicaFailedAsync(report).WaitAsync(cancellationToken);
                }
                _missedForwards.Forget(segment, hostId);
            }
            catch (Exception ex)
            {
                Log.ReplicaFailureReportFailed(logger, ex, hostId);
                await store.KeepSuspectAsync(segment).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ContinueOnCapturedContext);
            }
        }
    }

    /// <summary>Stops a copy whose premise is gone: we are no longer the primary, or the target is no longer the same pending replica.</summary>
    private void ThrowIfAbandoned(CopyRun run)
    {
        var reason = _deactivating ? "this storage server is deactivating" : StillCopying(run.Job, run.StartEpoch);
        if (reason is not null)
        {
            throw new StorageException($"copy to '{run.Job.TargetHostId}' abandoned at epoch {_map.Epoch}: {reason}");
        }
    }

    private string? StillCopying(CopyJob job, long startEpoch)
    {
        var volume = _map.FindVolume(job.VolumeId);
        if (volume is null || job.GroupIndex < 0 || job.GroupIndex >= volume.PlacementGroups.Length)
        {
            return "the volume is gone";
        }
        var group = volume.PlacementGroups[job.GroupIndex];
        if (!group.IsAvailable || group.Primary != _hostId)
        {
            return "this host is not the group's primary";
        }
        return group.IsPendingSince(job.TargetHostId, startEpoch) ? null : "the target is not (or no longer the same) pending replica";
    }

    /// <summary>The segments every running copy has still to go through, for the recovery gauge.</summary>
    private void CopiesChanged() => hostMetrics.PendingSegments(_copies.Values.Sum(r => r.SegmentsTotal - r.SegmentsDone));

    private void FinishCopy(CopyRun run, string? failure)
    {
        _copies.Remove(run.Job);
        CopiesChanged();
        var retryIn = _copyBackoff!.Finished(run.Job, succeeded: failure is null);
        var progress = run.Progress() with { Finished = clock.GetUtcNow(), Failure = failure };
        recoveryLog.Add(progress);
        if (failure is null)
        {
            Log.CopyFinished(logger, _hostId, run.Job.TargetHostId, run.Job.VolumeId, run.Job.GroupIndex, progress.SegmentsCopied, progress.SegmentsTotal, progress.BytesCopied);
        }
        else
        {
            Log.CopyFailed(logger, _hostId, run.Job.TargetHostId, run.Job.VolumeId, run.Job.GroupIndex, failure, retryIn.TotalSeconds);
        }
    }

    private static IEnumerable<long> SegmentsOf(VolumeInfo volume, int groupIndex)
    {
        for (long index = groupIndex; index < volume.SegmentCount; index += volume.PlacementGroups.Length)
        {
            yield return index;
        }
    }

    private sealed class CopyRun(CopyJob job, string sourceHostId, long startEpoch, DateTimeOffset started)
    {
        public CopyJob Job { get; } = job;
        public long StartEpoch { get; } = startEpoch;
        public Task Completion { get; set; } = Task.CompletedTask;
        public long SegmentsTotal { get; set; }
        public long SegmentsDone { get; set; }
        public long SegmentsCopied { get; set; }
        public long BytesCopied { get; set; }

        public CopyProgress Progress() =>
            new(Job, sourceHostId, StartEpoch, SegmentsTotal, SegmentsDone, SegmentsCopied, BytesCopied, started, null, null);
    }

    private sealed record InstalledSegments(long SinceEpoch, HashSet<long> Segments);

    /// <summary>
    /// After an unclean shutdown, the segments the write-intent bitmap names may hold data and a
    /// version that disagree (store.SuspectSegments; their versions are unknown now). Compare-and-repair
    /// from the primary, once per process: as a replica, this host is resynced (its suspect
    /// segments differ from the primary's, so they are copied); as the primary, its copy is the
    /// truth (every write acknowledged as durable is in it), so the suspect segments get the
    /// epoch's repair version, which no replica can hold, and the other replicas are resynced to match.
    /// Until every report was heard the segments stay suspect, and the next activation repeats it
    /// (harmless: a new repair version, a resync asked for again).
    /// </summary>
    private async Task RepairSuspectSegmentsAsync()
    {
        var epoch = _map.Epoch;
        var suspects = store.SuspectSegments;
        foreach (var (volumeId, segments) in suspects)
        {
            if (_map.FindVolume(volumeId) is not { } volume)
            {
                continue; // deleted, or not this map's: nothing to serve from it
            }
            foreach (var bySegmentGroup in segments.GroupBy(segment => volume.PlacementGroupOf(segment).Index))
            {
                var group = volume.PlacementGroups[bySegmentGroup.Key];
                IEnumerable<string> resync;
                if (group.Primary == _hostId)
                {
                    resync = group.Receivers.Skip(1).ToList();
                    if (!resync.Any())
                    {
                        continue; // no other copy to make agree: what survived is the data
                    }
                    foreach (var segment in bySegmentGroup)
                    {
                        // A version no replica can hold, even one that kept writes this host lost,
                        // so the resync copies the segment to all of them.
                        await store.MarkForRepairAsync(new SegmentAddress(volumeId, segment), epoch);
                    }
                }
                else
                {
                    resync = group.Contains(_hostId) ? [_hostId] : [];
                }
                foreach (var hostId in resync)
                {
                    Log.SuspectSegmentsRepair(logger, _hostId, hostId, group.Index, volume.Name, bySegmentGroup.Count());
                    var report = new ReplicaFailure(volumeId, group.Index, hostId, _hostId, "segments written before an unclean shutdown must be compared with the primary", epoch);
                    await Management.ReportReplicaFailedAsync(report);
                }
            }
        }
        store.SuspectSegmentsRepaired(suspects);
    }
}
