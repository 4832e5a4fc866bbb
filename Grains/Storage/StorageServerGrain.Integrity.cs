using OrleansStorage.Auth;
using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Segments;

namespace OrleansStorage.Storage;

/// <summary>
/// Silent corruption (docs/failures.md). Every read checks block checksums in the segment store;
/// here is what happens when one fails. On the primary the bad blocks are fetched from another
/// acting replica whose checksums hold and rewritten, under the write turn of those blocks (a
/// write in flight there has data and checksum apart for a moment, which is not corruption), and
/// the request goes on; with no good copy anywhere it fails with <see cref="DataCorruptException"/>,
/// never with the bad bytes. On a replica the segment's version becomes unknown and the replica
/// asks to be resynced. A scrub compares every block of a segment across all its replicas.
/// </summary>
public sealed partial class StorageServerGrain
{
    private long _blocksRepaired;
    private long _blocksLost;

    public async Task<SegmentData> ReadForRepairAsync(SegmentRead request)
    {
        var (volume, head) = await AdmitSegmentOrCopyAsync(request.Epoch, request.Segment);
        EpochGate.CheckRange(volume, request.Segment.SegmentIndex, request.Offset, request.Length);
        using var turn = await _writeOrder.EnterAsync(head, request.Offset, request.Length);
        AdmitCurrent(request.Epoch, head, ReplicaRole.Member);
        var buffer = new byte[request.Length];
        try
        {
            await store.ReadAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, buffer);
        }
        catch (CorruptBlocksException bad)
        {
            throw new DataCorruptException($"host '{_hostId}': {bad.Message}");
        }
        return new SegmentData(buffer);
    }

    public async Task<SegmentCheck> CheckSegmentAsync(long epoch, SegmentAddress segment)
    {
        var (volume, head) = await AdmitSegmentOrCopyAsync(epoch, segment);
        using var turn = await _writeOrder.EnterAsync(head, 0, volume.SegmentSizeBytes);
        AdmitCurrent(epoch, head, ReplicaRole.Member);
        return await store.CheckAsync(segment, volume.SegmentSizeBytes);
    }

    public async Task RepairBlocksAsync(BlockRepair repair)
    {
        var (volume, head) = await AdmitSegmentOrCopyAsync(repair.Epoch, repair.Segment);
        var offset = repair.FirstBlock * BlockChecksums.BlockSize;
        EpochGate.CheckRange(volume, repair.Segment.SegmentIndex, offset, repair.Bytes.Length);
        using var turn = await _writeOrder.EnterAsync(head, offset, repair.Bytes.Length);
        AdmitCurrent(repair.Epoch, head, ReplicaRole.Member);
        await store.RepairBlocksAsync(repair.Segment, volume.SegmentSizeBytes, repair.FirstBlock, repair.Bytes);
    }

    /// <summary>
    /// As the primary: the segment's replicas compared (deep: block by block, else by version),
    /// then each snapshot's copies of the segment the same way, all under the segment's turn.
    /// </summary>
    public async Task<SegmentScrub> ScrubSegmentAsync(long epoch, SegmentAddress segment, bool repair, bool deep)
    {
        var (volume, _) = await AdmitAsync(epoch, segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Admin, "verify");
        using var turn = await _writeOrder.EnterAsync(segment, 0, volume.SegmentSizeBytes);
        var (current, group) = AdmitCurrent(epoch, segment, ReplicaRole.Primary);
        var result = deep
            ? await ScrubUnderTurnAsync(volume, group, segment, repair)
            : await CompareVersionsUnderTurnAsync(volume, group, segment, repair);
        foreach (var snapshot in current.Snapshots)
        {
            var copy = new SegmentAddress(snapshot.SnapshotId, segment.SegmentIndex);
            var versions = await CompareVersionsUnderTurnAsync(volume, group, copy, repair, $"snapshot '{snapshot.Name}': ");
            var blocks = deep && versions.Problems.IsEmpty && store.HasFile(copy) ? await ScrubUnderTurnAsync(volume, group, copy, repair, $"snapshot '{snapshot.Name}': ") : null;
            result = result with
            {
                BytesChecked = result.BytesChecked + (blocks?.BytesChecked ?? 0),
                Problems = [.. result.Problems, .. versions.Problems, .. blocks?.Problems ?? []],
                BlocksRepaired = result.BlocksRepaired + (blocks?.BlocksRepaired ?? 0),
                BlocksLost = result.BlocksLost + (blocks?.BlocksLost ?? 0),
            };
        }
        return result;
    }

    public Task<TimeSpan> TimeSinceClientRequestAsync() => Task.FromResult(clock.GetElapsedTime(_lastClientRequest));

    /// <summary>A segment's version here; for a snapshot's copy, its copy's version (<see cref="SnapshotCopyVersions.NoCopy"/> when there is none).</summary>
    public async Task<long> GetSegmentVersionAsync(long epoch, SegmentAddress segment)
    {
        var (_, head) = await AdmitSegmentOrCopyAsync(epoch, segment);
        return VersionHere(head, segment);
    }

    private long VersionHere(SegmentAddress head, SegmentAddress address) =>
        head == address ? store.Version(address) : CopyVersion(address.VolumeId, address.SegmentIndex);

    /// <summary>
    /// A replica-side request that names a segment, or a snapshot's copy of one (by the
    /// snapshot's id): admitted as that segment of its volume (its group, its write turn).
    /// </summary>
    private async Task<(VolumeInfo Volume, SegmentAddress Head)> AdmitSegmentOrCopyAsync(long epoch, SegmentAddress address)
    {
        await CheckEpochAsync(epoch);
        var head = _map.FindVolume(address.VolumeId) is null && _map.FindSnapshot(address.VolumeId) is { } found
            ? new SegmentAddress(found.Volume.VolumeId, address.SegmentIndex)
            : address;
        var (volume, _) = await AdmitAsync(epoch, head, ReplicaRole.Member);
        return (volume, head);
    }

    /// <summary>
    /// The light scrub of one segment: with no write to it in flight (the caller holds its whole
    /// write turn), every acting replica must hold the primary's write version. One that does not
    /// (or whose version is unknown) missed a write: with <paramref name="repair"/> it is resynced.
    /// </summary>
    private async Task<SegmentScrub> CompareVersionsUnderTurnAsync(VolumeInfo volume, PlacementGroup group, SegmentAddress segment, bool repair, string what = "")
    {
        var epoch = _map.Epoch;
        var mine = VersionHere(new SegmentAddress(volume.VolumeId, segment.SegmentIndex), segment);
        var problems = new List<string>();
        if (mine == SegmentVersions.Unknown)
        {
            problems.Add($"{what}{_hostId}: the primary's write version is unknown (a suspect segment after an unclean shutdown)");
        }
        foreach (var hostId in group.Replicas.Skip(1))
        {
            long theirs;
            try
            {
                theirs = await Server(hostId).GetSegmentVersionAsync(epoch, segment);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                problems.Add($"{what}{hostId}: not checked ({ex.Message})");
                continue;
            }
            if (theirs == mine && theirs != SegmentVersions.Unknown)
            {
                continue;
            }
            problems.Add($"{what}{hostId}: write version {Describe(theirs)} differs from the primary's {Describe(mine)}" + (repair ? "; resync requested" : ""));
            if (repair)
            {
                await Management.ReportReplicaFailedAsync(new ReplicaFailure(volume.VolumeId, group.Index, hostId, _hostId, "a light scrub found its write version differing from the primary's", epoch));
            }
        }
        if (problems.Count > 0)
        {
            Log.ScrubFound(logger, _hostId, volume.Name, segment.SegmentIndex, string.Join("; ", problems), 0);
        }
        return new SegmentScrub(segment, group.Replicas.Length, 0, [.. problems], 0, 0);

        static string Describe(long version) => version == SegmentVersions.Unknown ? "unknown" : version == SnapshotCopyVersions.NoCopy ? "(no copy)" : $"{version >> SegmentVersions.EpochShift}.{version & 0xffffffff}";
    }

    /// <summary>A scrub of one segment; the caller holds the segment's whole write turn, so the copies hold still.</summary>
    private async Task<SegmentScrub> ScrubUnderTurnAsync(VolumeInfo volume, PlacementGroup group, SegmentAddress segment, bool repair, string what = "")
    {
        var epoch = _map.Epoch;
        var problems = new List<string>();
        var copies = new List<(string HostId, SegmentCheck Check)> { (_hostId, await store.CheckAsync(segment, volume.SegmentSizeBytes)) };
        foreach (var hostId in group.Replicas.Skip(1))
        {
            try
            {
                copies.Add((hostId, await Server(hostId).CheckSegmentAsync(epoch, segment)));
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                problems.Add($"{what}{hostId}: not checked ({ex.Message})");
            }
        }
        var plan = ScrubPlanner.Plan(_hostId, copies);
        problems.AddRange(ScrubPlanner.Describe(plan.Findings).Select(finding => what + finding));
        var repaired = 0;
        if (repair)
        {
            foreach (var (firstBlock, blocks, source, targets) in ScrubPlanner.Runs(plan.Repairs))
            {
                var offset = firstBlock * BlockChecksums.BlockSize;
                var length = (int)Math.Min((long)blocks * BlockChecksums.BlockSize, volume.SegmentSizeBytes - offset);
                var good = source == _hostId
                    ? await ReadOwnAsync(volume, segment, offset, length)
                    : (await Server(source).ReadForRepairAsync(new SegmentRead(epoch, segment, offset, length))).Bytes;
                foreach (var target in targets)
                {
                    if (target == _hostId)
                    {
                        await store.RepairBlocksAsync(segment, volume.SegmentSizeBytes, firstBlock, good);
                    }
                    else
                    {
                        await Server(target).RepairBlocksAsync(new BlockRepair(epoch, segment, firstBlock, good));
                    }
                    repaired += blocks;
                }
            }
        }
        if (plan.LostBlocks.Count > 0)
        {
            problems.Add($"{what}{plan.LostBlocks.Count} block(s) from block {plan.LostBlocks[0]} have no good copy on any replica");
        }
        if (problems.Count > 0)
        {
            Log.ScrubFound(logger, _hostId, volume.Name, segment.SegmentIndex, string.Join("; ", problems), repaired);
        }
        _blocksRepaired += repaired;
        return new SegmentScrub(segment, copies.Count, copies.Sum(c => (long)c.Check.Checksums.Length) * BlockChecksums.BlockSize, [.. problems], repaired, plan.LostBlocks.Count);
    }

    private async Task<ReadOnlyMemory<byte>> ReadOwnAsync(VolumeInfo volume, SegmentAddress segment, int offset, int length)
    {
        var bytes = new byte[length];
        await store.ReadAsync(segment, volume.SegmentSizeBytes, offset, bytes);
        return bytes;
    }

    /// <summary>
    /// A read as the primary whose fast path found bad blocks: again under the write turn of the
    /// range (a write in flight may have been all it saw), and if the blocks are still bad they are
    /// repaired from another replica first.
    /// </summary>
    private async Task ReadRepairingAsync(SegmentRead request, VolumeInfo volume, Memory<byte> buffer)
    {
        using var turn = await _writeOrder.EnterAsync(request.Segment, request.Offset, request.Length);
        var (_, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Primary);
        await WithOwnRepairAsync(volume, group, () => store.ReadAsync(request.Segment, volume.SegmentSizeBytes, request.Offset, buffer).AsTask());
    }

    /// <summary>
    /// Runs a local operation of the primary that reads blocks of its own copy; if some fail their
    /// checksums they are repaired from another replica and the operation runs again. The caller
    /// holds the write turn of every block the operation touches.
    /// </summary>
    private async Task WithOwnRepairAsync(VolumeInfo volume, PlacementGroup group, Func<Task> operation)
    {
        try
        {
            await operation();
            return;
        }
        catch (CorruptBlocksException bad)
        {
            await RepairOwnBlocksAsync(volume, group, bad);
        }
        await operation();
    }

    /// <summary>Rewrites this host's bad blocks from the first other acting replica with a good copy; none: the data is lost here.</summary>
    private async Task RepairOwnBlocksAsync(VolumeInfo volume, PlacementGroup group, CorruptBlocksException bad)
    {
        var failures = new List<string>();
        foreach (var (firstBlock, lastBlock) in ScrubPlanner.Ranges(bad.Blocks))
        {
            var blocks = lastBlock - firstBlock + 1;
            var offset = firstBlock * BlockChecksums.BlockSize;
            var length = (int)Math.Min((long)blocks * BlockChecksums.BlockSize, volume.SegmentSizeBytes - offset);
            var repaired = false;
            foreach (var hostId in group.Replicas.Where(h => h != _hostId))
            {
                try
                {
                    var good = await Server(hostId).ReadForRepairAsync(new SegmentRead(_map.Epoch, bad.Segment, offset, length));
                    await store.RepairBlocksAsync(bad.Segment, volume.SegmentSizeBytes, firstBlock, good.Bytes);
                    _blocksRepaired += blocks;
                    Log.BlocksRepaired(logger, _hostId, volume.Name, bad.Segment.SegmentIndex, firstBlock, blocks, hostId);
                    repaired = true;
                    break;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    failures.Add(ex.Message);
                }
            }
            if (!repaired)
            {
                _blocksLost += blocks;
                Log.BlocksLost(logger, _hostId, volume.Name, bad.Segment.SegmentIndex, firstBlock, blocks);
                var others = failures.Count == 0 ? "no other replica is acting" : string.Join("; ", failures);
                throw new DataCorruptException($"volume '{volume.Name}' segment {bad.Segment.SegmentIndex}: {blocks} block(s) from byte {offset} fail their checksums on '{_hostId}' and no other replica has a good copy ({others})");
            }
        }
    }

    /// <summary>
    /// As a replica, a write found blocks of its copy bad: the write is applied anyway (the segment
    /// is to be recopied whole), the segment's version becomes unknown so that a resync copies it,
    /// and management is asked to resync this host.
    /// </summary>
    private async Task WriteOverBadCopyAsync(PlacementGroup group, CorruptBlocksException bad, Func<Task> writeUnchecked)
    {
        Log.ReplicaCopyBad(logger, _hostId, bad.Segment.VolumeId, bad.Segment.SegmentIndex, bad.Message);
        store.ForgetVersion(bad.Segment);
        await writeUnchecked();
        var report = new ReplicaFailure(bad.Segment.VolumeId, group.Index, _hostId, _hostId, $"blocks fail their checksums: {bad.Message}", _map.Epoch);
        InBackground(Management.ReportReplicaFailedAsync(report), ex => Log.ReplicaFailureReportFailed(logger, ex, _hostId));
    }

    private IStorageServerGrain Server(string hostId) => GrainFactory.GetGrain<IStorageServerGrain>(hostId);
}
