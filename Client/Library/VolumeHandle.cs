using System.Buffers.Binary;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Client.Library;

/// <summary>
/// A volume (or, read-only, one of its snapshots) opened by name, addressed by byte offset. Requests are split at segment boundaries
/// (and at the data port's request limit) and the pieces issued in parallel, straight to their
/// placement groups' primaries over the hosts' data ports, each carrying the client's epoch; a
/// piece rejected for a stale epoch or a wrong host, or lost with its connection, is retried on a
/// fresh map.
/// </summary>
public sealed class VolumeHandle
{
    private readonly OstorClient _client;

    internal VolumeHandle(OstorClient client, VolumeInfo volume, SnapshotInfo? snapshot = null)
    {
        _client = client;
        VolumeId = volume.VolumeId;
        VolumeName = volume.Name;
        Snapshot = snapshot;
        Name = snapshot is null ? volume.Name : volume.Name + SnapshotSeparator + snapshot.Name;
    }

    /// <summary>Between a volume's name and a snapshot's: <c>VOL@SNAP</c> names the snapshot.</summary>
    public const char SnapshotSeparator = '@';

    public Guid VolumeId { get; }

    /// <summary>The name it was opened by: the volume's, or <c>VOL@SNAP</c>.</summary>
    public string Name { get; }

    public string VolumeName { get; }

    /// <summary>The snapshot this handle reads; null for the volume itself.</summary>
    public SnapshotInfo? Snapshot { get; }

    /// <summary>A snapshot is read-only: writes and trims are refused.</summary>
    public bool IsReadOnly => Snapshot is not null;

    /// <summary>The volume as the client's current map describes it.</summary>
    public VolumeInfo Info => _client.Maps.Current.FindVolume(VolumeId) ?? throw new VolumeNotFoundException(VolumeName);

    /// <summary>The volume's size, or the snapshot's: the volume's when it was taken.</summary>
    public long SizeBytes => Snapshot?.SizeBytes ?? Info.SizeBytes;

    // What the data requests name: the snapshot's id for a snapshot (its primary finds the volume).
    private Guid Target => Snapshot?.SnapshotId ?? VolumeId;

    public async Task ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        var volume = CheckRange(offset, destination.Length);
        using var span = StorageTelemetry.StartRequest("ostor.read", Name, offset, destination.Length);
        var slices = SegmentSplitter.Split(offset, destination.Length, volume.SegmentSizeBytes, DataPortLimits.MaxPayload);
        var op = IsReadOnly ? DataOp.SnapshotRead : DataOp.Read;
        await ForEachSliceAsync(slices, async (slice, map, primary) =>
        {
            var into = destination.Slice(slice.BufferOffset, slice.Length);
            try
            {
                await _client.SendDataAsync(map, primary, Request(op, map, slice), readInto: into);
            }
            catch (ReadThroughException)
            {
                await ReadParentAsync(map, slice, into, cancellationToken);
            }
        }, cancellationToken);
    }

    /// <param name="forceUnitAccess">When true the data is durable on every replica before this returns.</param>
    public async Task WriteAsync(long offset, ReadOnlyMemory<byte> data, bool forceUnitAccess = false, CancellationToken cancellationToken = default)
    {
        ThrowIfReadOnly("write");
        var volume = CheckRange(offset, data.Length);
        using var span = StorageTelemetry.StartRequest("ostor.write", Name, offset, data.Length);
        await _client.WatchWritesAsync(volume);
        // Counted in flight, and held while a snapshot of the volume is being taken: whole in it or not at all.
        using var pass = await _client.Gates.EnterAsync(VolumeId, cancellationToken);
        var slices = SegmentSplitter.Split(offset, data.Length, volume.SegmentSizeBytes, DataPortLimits.MaxPayload);
        await ForEachSliceAsync(slices, (slice, map, primary) => MaterializingAsync(map, primary, slice, () =>
            _client.SendDataAsync(map, primary, Request(DataOp.Write, map, slice, forceUnitAccess), data.Slice(slice.BufferOffset, slice.Length)), cancellationToken),
            cancellationToken, changesData: true);
    }

    /// <summary>Discards a range: it reads as zeros afterwards and its space is freed.</summary>
    public async Task TrimAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        ThrowIfReadOnly("trim");
        var volume = CheckRange(offset, length);
        using var span = StorageTelemetry.StartRequest("ostor.trim", Name, offset, length);
        await _client.WatchWritesAsync(volume);
        using var pass = await _client.Gates.EnterAsync(VolumeId, cancellationToken);
        for (long done = 0; done < length; done += int.MaxValue / 2)
        {
            var part = (int)Math.Min(length - done, int.MaxValue / 2);
            var slices = SegmentSplitter.Split(offset + done, part, volume.SegmentSizeBytes);
            await ForEachSliceAsync(slices, (slice, map, primary) => MaterializingAsync(map, primary, slice, () => _client.SendDataAsync(map, primary, Request(DataOp.Trim, map, slice)), cancellationToken),
                cancellationToken, changesData: true);
        }
    }

    /// <summary>
    /// The written ranges of [offset, offset+length) as volume offsets, in order; everything else
    /// was never written (or was trimmed) and reads as zeros.
    /// </summary>
    public async Task<IReadOnlyList<(long Offset, long Length)>> GetAllocationAsync(long offset, int length, CancellationToken cancellationToken = default)
    {
        var volume = CheckRange(offset, length);
        var slices = SegmentSplitter.Split(offset, length, volume.SegmentSizeBytes);
        var perSlice = new byte[]?[slices.Length];
        await ForEachSliceAsync(slices, async (slice, map, primary) =>
        {
            try
            {
                perSlice[slice.SegmentIndex - slices[0].SegmentIndex] = await _client.SendDataAsync(map, primary, Request(IsReadOnly ? DataOp.SnapshotAllocation : DataOp.Allocation, map, slice));
            }
            catch (ReadThroughException)
            {
                perSlice[slice.SegmentIndex - slices[0].SegmentIndex] = await ParentAllocationAsync(map, slice, cancellationToken);
            }
        }, cancellationToken);
        var extents = new List<(long Offset, long Length)>();
        for (var i = 0; i < slices.Length; i++)
        {
            var segmentStart = slices[i].SegmentIndex * volume.SegmentSizeBytes;
            var encoded = perSlice[i] ?? [];
            for (var at = 0; at + 8 <= encoded.Length; at += 8)
            {
                var start = segmentStart + BinaryPrimitives.ReadInt32LittleEndian(encoded.AsSpan(at));
                var extentLength = BinaryPrimitives.ReadInt32LittleEndian(encoded.AsSpan(at + 4));
                // Extents that touch across a segment boundary are one range to the caller.
                if (extents.Count > 0 && extents[^1].Offset + extents[^1].Length == start)
                {
                    extents[^1] = (extents[^1].Offset, extents[^1].Length + extentLength);
                }
                else
                {
                    extents.Add((start, extentLength));
                }
            }
        }
        return extents;
    }

    /// <summary>
    /// Makes every write this client had acknowledged before this call durable on every replica:
    /// one round trip to each host that took writes of the volume from this client since its last
    /// flush (none at all if there were none).
    /// </summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        if (IsReadOnly)
        {
            return; // nothing written through a snapshot
        }
        var written = _client.Unflushed.Take(VolumeId);
        try
        {
            await _client.RetryAsync(async map =>
            {
                var volume = map.FindVolume(VolumeId) ?? throw new VolumeNotFoundException(Name);
                var hosts = volume.PlacementGroups.SelectMany(pg => pg.Receivers).Distinct().Where(h => written is null || written.Contains(h)).ToList();
                var flush = new DataRequestHeader(DataOp.Flush, 0, map.Epoch, VolumeId, 0, 0, 0, 0, false, 0);
                await Task.WhenAll(hosts.Select(h => _client.SendDataAsync(map, h, flush)));
            }, cancellationToken);
            _client.Unflushed.Flushed(VolumeId);
        }
        catch
        {
            _client.Unflushed.Restore(VolumeId, written);
            throw;
        }
    }

    /// <summary>
    /// Checks every block of every segment on every acting replica against its checksum and
    /// against the other replicas (the primary of each group does it, with writes to that segment
    /// waiting meanwhile), and with <paramref name="repair"/> rewrites each bad or different copy
    /// from a good one. Never-written segments cost nothing. Without <paramref name="deep"/>, a
    /// light scrub: only each segment's write version is compared across its replicas (no data is
    /// read), and with <paramref name="repair"/> a replica that differs is resynced.
    /// </summary>
    public async Task<VolumeScrubResult> ScrubAsync(bool repair, Action<long>? progress = null, CancellationToken cancellationToken = default, bool deep = true)
    {
        var volume = Info;
        var problems = new System.Collections.Concurrent.ConcurrentBag<(long Segment, string Problem)>();
        long repaired = 0, lost = 0, bytesChecked = 0;
        await Parallel.ForAsync(0L, volume.SegmentCount, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = cancellationToken }, async (segment, ct) =>
        {
            SegmentScrub? scrub = null;
            await _client.RetryAsync(async map =>
            {
                var current = map.FindVolume(VolumeId) ?? throw new VolumeNotFoundException(Name);
                var group = current.PlacementGroupOf(segment);
                if (!group.IsAvailable)
                {
                    throw new PlacementGroupUnavailableException(Name, group.Index, map.Epoch, []);
                }
                if (group.Replicas.Length != current.ReplicationFactor)
                {
                    problems.Add((segment, $"segment {segment}: placement group {group.Index} has {group.Replicas.Length} of {current.ReplicationFactor} replicas acting"));
                }
                scrub = await _client.StorageServer(group.Primary).ScrubSegmentAsync(map.Epoch, new SegmentAddress(VolumeId, segment), repair, deep);
            }, ct);
            foreach (var problem in scrub!.Problems)
            {
                problems.Add((segment, $"segment {segment}: {problem}"));
            }
            Interlocked.Add(ref repaired, scrub.BlocksRepaired);
            Interlocked.Add(ref lost, scrub.BlocksLost);
            Interlocked.Add(ref bytesChecked, scrub.BytesChecked);
            progress?.Invoke(Math.Min(volume.SegmentSizeBytes, volume.SizeBytes - (segment * volume.SegmentSizeBytes)));
        });
        return new VolumeScrubResult([.. problems.OrderBy(p => p.Segment).Select(p => p.Problem)], repaired, lost, bytesChecked);
    }

    /// <summary>What <see cref="ScrubAsync"/> found and did, for the whole volume; every problem is one line for a person.</summary>
    public sealed record VolumeScrubResult(IReadOnlyList<string> Problems, long BlocksRepaired, long BlocksLost, long BytesChecked);

    /// <summary>
    /// The problems a scrub without repair finds: blocks that fail their checksums, copies that
    /// differ from the majority of good ones, groups not at full factor. Empty when every replica
    /// of every segment holds the same, checksum-true data.
    /// </summary>
    public async Task<IReadOnlyList<string>> VerifyReplicasAsync(Action<long>? progress = null, CancellationToken cancellationToken = default) =>
        (await ScrubAsync(repair: false, progress, cancellationToken)).Problems;

    /// <summary>
    /// Whether the clone's segment still reads through to its parent; if so, gives it the parent's
    /// bytes (flatten does this for every segment). False for a segment that has its own already.
    /// </summary>
    internal async Task<bool> MaterializeIfNeededAsync(long segmentIndex, CancellationToken cancellationToken)
    {
        var materialized = false;
        await ForEachSliceAsync([new SegmentSlice(segmentIndex, 0, 0, 0)], async (slice, map, primary) =>
        {
            try
            {
                await _client.SendDataAsync(map, primary, Request(DataOp.Read, map, slice));
            }
            catch (ReadThroughException)
            {
                // Counted even if this attempt fails and a retry finds it materialized: it was ours to do.
                materialized = true;
                await MaterializeAsync(map, primary, segmentIndex, cancellationToken);
            }
        }, cancellationToken);
        return materialized;
    }

    /// <summary>A write or trim of a clone's segment that still reads through: materialize it, then send again.</summary>
    private async Task MaterializingAsync(ClusterMap map, string primary, SegmentSlice slice, Func<Task> send, CancellationToken cancellationToken)
    {
        try
        {
            await send();
        }
        catch (ReadThroughException)
        {
            await MaterializeAsync(map, primary, slice.SegmentIndex, cancellationToken);
            await send();
        }
    }

    /// <summary>Gives a clone's segment the parent snapshot's bytes (zeros past the snapshot's end), on every replica at once.</summary>
    private async Task MaterializeAsync(ClusterMap map, string primary, long segmentIndex, CancellationToken cancellationToken)
    {
        var volume = map.FindVolume(VolumeId) ?? throw new VolumeNotFoundException(VolumeName);
        var start = segmentIndex * volume.SegmentSizeBytes;
        var image = new byte[(int)Math.Min(volume.SegmentSizeBytes, volume.SizeBytes - start)];
        await ReadParentAsync(map, new SegmentSlice(segmentIndex, 0, image.Length, 0), image, cancellationToken);
        var header = new DataRequestHeader(DataOp.Materialize, 0, map.Epoch, VolumeId, segmentIndex, 0, image.Length, 0, false, image.Length);
        await _client.SendDataAsync(map, primary, header, image);
    }

    /// <summary>A slice of a clone that reads through: the parent snapshot's bytes, zeros past its end.</summary>
    private async Task ReadParentAsync(ClusterMap map, SegmentSlice slice, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var (parent, offset, inParent) = ParentRange(map, slice);
        destination.Span[inParent..].Clear();
        if (inParent > 0)
        {
            await parent.ReadAsync(offset, destination[..inParent], cancellationToken);
        }
    }

    /// <summary>A slice of a clone that reads through: the parent's allocation, encoded as the server encodes its own (offset and length in the segment).</summary>
    private async Task<byte[]> ParentAllocationAsync(ClusterMap map, SegmentSlice slice, CancellationToken cancellationToken)
    {
        var (parent, offset, inParent) = ParentRange(map, slice);
        if (inParent == 0)
        {
            return [];
        }
        var segmentStart = offset - slice.OffsetInSegment;
        var extents = await parent.GetAllocationAsync(offset, inParent, cancellationToken);
        var encoded = new byte[extents.Count * 8];
        for (var i = 0; i < extents.Count; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(encoded.AsSpan(i * 8), (int)(extents[i].Offset - segmentStart));
            BinaryPrimitives.WriteInt32LittleEndian(encoded.AsSpan((i * 8) + 4), (int)extents[i].Length);
        }
        return encoded;
    }

    /// <summary>The parent snapshot of this clone as the map names it, where the slice starts in it, and how much of the slice lies inside it.</summary>
    private (VolumeHandle Parent, long Offset, int InParent) ParentRange(ClusterMap map, SegmentSlice slice)
    {
        var volume = map.FindVolume(VolumeId) ?? throw new VolumeNotFoundException(VolumeName);
        // Retried on a fresh map: a clone flattened meanwhile has no parent any more, and reads its own.
        var link = volume.Parent ?? throw new StorageException($"'{Name}' was told to read through, but the map at epoch {map.Epoch} names no parent for it");
        var parentVolume = map.FindVolume(link.VolumeId) ?? throw new StorageException($"the parent volume of clone '{VolumeName}' is not in the map at epoch {map.Epoch}");
        var snapshot = parentVolume.FindSnapshot(link.SnapshotId) ?? throw new StorageException($"the parent snapshot of clone '{VolumeName}' is not in the map at epoch {map.Epoch}");
        var offset = (slice.SegmentIndex * volume.SegmentSizeBytes) + slice.OffsetInSegment;
        var inParent = (int)Math.Clamp(snapshot.SizeBytes - offset, 0, slice.Length);
        return (new VolumeHandle(_client, parentVolume, snapshot), offset, inParent);
    }

    private VolumeInfo CheckRange(long offset, long length)
    {
        var volume = Info;
        var size = SizeBytes;
        if (offset < 0 || length < 0 || offset > size || length > size - offset)
        {
            throw new InvalidRequestException(
                $"range [{offset}, {offset + length}) is outside {(IsReadOnly ? "snapshot" : "volume")} '{Name}' of {size} bytes");
        }
        return volume;
    }

    private void ThrowIfReadOnly(string what)
    {
        if (IsReadOnly)
        {
            throw new InvalidRequestException($"cannot {what} '{Name}': a snapshot is read-only");
        }
    }

    private DataRequestHeader Request(DataOp op, ClusterMap map, SegmentSlice slice, bool forceUnitAccess = false) =>
        new(op, 0, map.Epoch, Target, slice.SegmentIndex, slice.OffsetInSegment, slice.Length, 0, forceUnitAccess, 0);

    /// <param name="changesData">A write or trim: its hosts are noted for the next flush before it is sent (a FUA write's too: its data is durable, its write version only with the flush).</param>
    private Task ForEachSliceAsync(SegmentSlice[] slices, Func<SegmentSlice, ClusterMap, string, Task> operation, CancellationToken cancellationToken, bool changesData = false)
    {
        if (slices.Length == 1)
        {
            return RunSliceAsync(slices[0], operation, cancellationToken, changesData);
        }
        var tasks = new Task[slices.Length];
        for (var i = 0; i < slices.Length; i++)
        {
            tasks[i] = RunSliceAsync(slices[i], operation, cancellationToken, changesData);
        }
        return Task.WhenAll(tasks);
    }

    private Task RunSliceAsync(SegmentSlice slice, Func<SegmentSlice, ClusterMap, string, Task> operation, CancellationToken cancellationToken, bool changesData) =>
        _client.RetryAsync(async map =>
        {
            var volume = map.FindVolume(VolumeId) ?? throw new VolumeNotFoundException(Name);
            var group = volume.PlacementGroupOf(slice.SegmentIndex);
            if (!group.IsAvailable)
            {
                throw new PlacementGroupUnavailableException(volume.Name, group.Index, map.Epoch, group.Absent);
            }
            if (!changesData)
            {
                await operation(slice, map, group.Primary);
                return;
            }
            // Every host the primary forwards to at this epoch holds the write once it is
            // acknowledged; noted again when it ends, for a flush that overlapped it took them.
            using var writing = _client.Unflushed.BeginWrite(VolumeId, group.Receivers);
            WriteAttempts.CountOne();
            await operation(slice, map, group.Primary);
        }, cancellationToken);
}
