using OrleansStorage.Auth;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

/// <summary>
/// Clones on the storage server (docs/snapshots.md, "Clones"). A clone's segment that was never
/// written has no file on its hosts: reads, allocation queries and writes of it are answered
/// <see cref="DataStatus.ReadThrough"/>, and the client reads the parent snapshot instead, or
/// first materializes the segment (gives it the parent's bytes, on every replica) and then
/// writes. A segment past the parent snapshot's end is the clone's own from the start.
/// </summary>
public sealed partial class StorageServerGrain
{
    /// <summary>Throws <see cref="ReadThroughException"/> when the segment of this clone still reads through to its parent.</summary>
    private void ThrowIfReadsThrough(VolumeInfo volume, SegmentAddress segment)
    {
        if (ReadsThrough(volume, segment))
        {
            throw new ReadThroughException($"segment {segment.SegmentIndex} of clone '{volume.Name}' was never written: read it from its parent snapshot");
        }
    }

    private bool ReadsThrough(VolumeInfo volume, SegmentAddress segment) =>
        volume.Parent is { } parent
        && _map.FindVolume(parent.VolumeId)?.FindSnapshot(parent.SnapshotId) is { } snapshot
        && segment.SegmentIndex * (long)volume.SegmentSizeBytes < snapshot.SizeBytes
        && !store.HasFile(segment);

    /// <summary>
    /// As a clone's primary: the segment's first contents, the parent snapshot's bytes as the
    /// client read them, installed here and on every replica with one new version. Nothing when
    /// the segment has contents already (another client materialized it first). Not a write:
    /// a snapshot of the clone read the same bytes through to the parent before, so no copy is made.
    /// </summary>
    public async Task MaterializeAsync(SegmentWrite request)
    {
        _lastClientRequest = clock.GetTimestamp();
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Primary);
        access.Demand(volume, CapabilityLevel.Write, "write");
        if (volume.Parent is null)
        {
            throw new InvalidRequestException($"volume '{volume.Name}' is not a clone: nothing to materialize");
        }
        CheckWholeSegment(volume, request);
        using var turn = await _writeOrder.EnterAsync(request.Segment, 0, volume.SegmentSizeBytes);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        var (current, group) = AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Primary);
        if (!ReadsThrough(current, request.Segment))
        {
            return;
        }
        // Counted in flight from its version to its end: until then no flush may call the segment clean.
        using var change = await store.BeginChangeAsync(request.Segment);
        var version = await store.NextVersionAsync(request.Segment, _map.Epoch);
        var local = store.InstallDenseAsync(request.Segment, current.SegmentSizeBytes, request.Data, version);
        var header = new DataRequestHeader(DataOp.ReplicaMaterialize, 0, request.Epoch, request.Segment.VolumeId, request.Segment.SegmentIndex,
            0, request.Data.Length, version, false, request.Data.Length);
        await ForwardAsync(group, request.Segment, new ByteRange(0, request.Data.Length), version, local,
            (host, carried) => ForwardOverDataPortAsync(host, header with { Version = carried }, request.Data));
    }

    /// <summary>As a replica: the primary's materialization, installed with its version (again, harmlessly, if it came twice).</summary>
    public async Task ReplicaMaterializeAsync(SegmentWrite request)
    {
        var (volume, _) = await AdmitAsync(request.Epoch, request.Segment, ReplicaRole.Member);
        CheckWholeSegment(volume, request);
        using var turn = await _writeOrder.EnterAsync(request.Segment, 0, volume.SegmentSizeBytes);
        DataRequestDeadline.ThrowIfPassed(_hostId);
        AdmitCurrent(request.Epoch, request.Segment, ReplicaRole.Member);
        await store.InstallDenseAsync(request.Segment, volume.SegmentSizeBytes, request.Data, request.Version);
    }

    /// <summary>A materialization carries the whole segment (up to the clone's end) from offset 0.</summary>
    private static void CheckWholeSegment(VolumeInfo volume, SegmentWrite request)
    {
        var expected = (int)Math.Min(volume.SegmentSizeBytes, volume.SizeBytes - (request.Segment.SegmentIndex * volume.SegmentSizeBytes));
        if (request.Offset != 0 || request.Data.Length != expected)
        {
            throw new InvalidRequestException($"a materialization of segment {request.Segment.SegmentIndex} of '{volume.Name}' carries {request.Data.Length} bytes at {request.Offset}; it must carry the whole segment, {expected} bytes at 0");
        }
    }
}
