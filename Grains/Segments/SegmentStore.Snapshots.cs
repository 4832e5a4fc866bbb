using System.Globalization;
using System.Text;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// Snapshot copies (docs/snapshots.md). A snapshot keeps its copies of segments under its own id,
/// beside the volumes: <c>{root}/volumes/{snapshot-guid}/</c> holds segment files, checksums and
/// versions exactly as a volume does, so reads, checksums, allocation and copies to other replicas
/// work on them unchanged, plus an <see cref="SnapshotOwnerFileName"/> naming the volume and the
/// snapshot's epoch. A segment's copy is made on its first write after the snapshot and never
/// changes after; a segment never written before the snapshot gets an empty copy (no data).
/// </summary>
public sealed partial class SegmentStore
{
    /// <summary>In a snapshot's directory: "{volume guid} {epoch}", what the copies belong to.</summary>
    public const string SnapshotOwnerFileName = "snapshot-of";

    /// <summary>
    /// Makes <paramref name="segment"/>'s copy for the snapshot from the segment as it is now, with
    /// its version, durably, before the write that follows may change the segment. Nothing when the
    /// copy exists already: a copy is published whole or not at all (<see cref="PublishCopyAsync"/>),
    /// so one that exists is finished. The caller holds the segment's whole-range write turn.
    /// </summary>
    /// <param name="version">The copy's version; null: the segment's own.</param>
    public async Task PreserveAsync(SegmentAddress segment, SnapshotNamespace snapshot, int segmentSize, long? version = null)
    {
        var copy = new SegmentAddress(snapshot.SnapshotId, segment.SegmentIndex);
        if (HasFile(copy))
        {
            return;
        }
        EnsureSnapshotNamespace(snapshot);
        var (extents, bytes) = HasFile(segment) ? await ReadImageAsync(segment, segmentSize).ConfigureAwait(false) : ([], []);
        await PublishCopyAsync(copy, segmentSize, extents, bytes, version ?? Version(segment)).ConfigureAwait(false);
        Settled(copy);
    }

    /// <summary>Installs a copy of a snapshot's segment sent by the primary (a resync), then marks it settled like a local copy.</summary>
    public async Task InstallSnapshotCopyAsync(SegmentAddress copy, SnapshotNamespace snapshot, int segmentSize, DataExtent[] extents, ReadOnlyMemory<byte> bytes, long version)
    {
        EnsureSnapshotNamespace(snapshot);
        await PublishCopyAsync(copy, segmentSize, extents, bytes, version).ConfigureAwait(false);
        Settled(copy);
    }

    /// <summary>
    /// Where a copy is written before it is published; never listed as a segment (its name does
    /// not end in .seg), and what a crash leaves of one is removed at open.
    /// </summary>
    public const string UnpublishedCopySuffix = ".unpublished";

    /// <summary>
    /// Writes a snapshot's copy so that after a crash it is either whole, with its version, or
    /// absent, as storage engines publish a file: data and checksums into files of their own,
    /// fsynced, then renamed into place (checksums first: the data file's presence is what makes
    /// the copy exist) and the directory fsynced. Written in place instead, a copy cut short by a
    /// crash was a file with some extents missing that copy-on-write took as finished and a
    /// resync sent to the other replicas (issue 28, hole 3). An absent copy is simply made again:
    /// the write that follows a copy waits for it, so the head still holds what the copy needs.
    /// The version is durable before the copy exists; a copy being replaced (a resync) is unknown
    /// while its files change, so a crash then leaves a copy that is resynced, never trusted.
    /// </summary>
    private async Task PublishCopyAsync(SegmentAddress copy, int segmentSize, DataExtent[] extents, ReadOnlyMemory<byte> bytes, long version)
    {
        try
        {
            CheckImage(segmentSize, extents, bytes);
            ThrowIfFailed();
            var data = SegmentPath(copy) + UnpublishedCopySuffix;
            var checksums = ChecksumPath(copy) + UnpublishedCopySuffix;
            using (var dataFile = File.OpenHandle(data, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous))
            using (var checksumFile = File.OpenHandle(checksums, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite))
            {
                var at = 0;
                foreach (var extent in extents)
                {
                    await RandomAccess.WriteAsync(dataFile, bytes.Slice(at, extent.Length), extent.Offset).ConfigureAwait(false);
                    at += extent.Length;
                }
                BlockChecksums.Write(checksumFile, 0, ImageChecksums(segmentSize, extents, bytes.Span));
                await Task.WhenAll(
                    Task.Run(() => Sync(data, () => FsyncHandle(dataFile))),
                    Task.Run(() => Sync(checksums, () => FsyncHandle(checksumFile)))).ConfigureAwait(false);
            }
            var replacing = HasFile(copy);
            _versions.Set(copy.VolumeId, copy.SegmentIndex, replacing ? SegmentVersions.Unknown : version);
            SyncVersions(copy.VolumeId);
            lock (_gate)
            {
                Close(copy); // a handle on the file being replaced must not serve the new copy
            }
            File.Move(checksums, ChecksumPath(copy), overwrite: true);
            File.Move(data, SegmentPath(copy), overwrite: true);
            SyncVolumeDirectory(copy.VolumeId);
            if (replacing)
            {
                _versions.Set(copy.VolumeId, copy.SegmentIndex, version);
                SyncVersions(copy.VolumeId);
            }
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"copy of segment {copy.SegmentIndex} for snapshot {copy.VolumeId} failed: {ex.Message}");
        }
    }

    /// <summary>Removes what crashes left of copies never published; their copy-on-write or resync makes them again.</summary>
    private void RemoveUnpublishedCopies()
    {
        foreach (var id in ListVolumes())
        {
            foreach (var leftover in Directory.EnumerateFiles(VolumeDirectory(id), "*" + UnpublishedCopySuffix))
            {
                File.Delete(leftover);
            }
        }
    }

    /// <summary>
    /// A copy that was published with every part durable: it needs no flush and no write intent
    /// (a snapshot's copies are never written again, so nothing would ever clear one; one left by
    /// a store that wrote copies in place is cleared here).
    /// </summary>
    private void Settled(SegmentAddress copy)
    {
        lock (_gate)
        {
            _dirty.Remove(copy);
            _cleanSince.Remove(copy);
            _newFiles.Remove(copy.VolumeId);
            _intents.Clear(copy.VolumeId, [copy.SegmentIndex]);
        }
    }

    /// <summary>The snapshot's directory and owner file, made durable the first time.</summary>
    public void EnsureSnapshotNamespace(SnapshotNamespace snapshot)
    {
        var directory = VolumeDirectory(snapshot.SnapshotId);
        var owner = Path.Combine(directory, SnapshotOwnerFileName);
        if (File.Exists(owner))
        {
            return;
        }
        if (!Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory);
            SyncDirectory(_volumesRoot);
        }
        var line = string.Create(CultureInfo.InvariantCulture, $"{snapshot.VolumeId:N} {snapshot.Epoch}\n");
        // Written atomically as DurableFiles.WriteAtomically does, but with the store's own fsyncs,
        // which its disk-fault seam sees (a power-loss simulation must know this file is durable).
        var temporary = owner + ".tmp";
        using (var file = File.OpenHandle(temporary, FileMode.Create, FileAccess.Write))
        {
            RandomAccess.Write(file, Encoding.ASCII.GetBytes(line), 0);
            Sync(temporary, () => FsyncHandle(file));
        }
        File.Move(temporary, owner, overwrite: true);
        SyncDirectory(directory);
    }

    /// <summary>Every snapshot that has a directory on this host, with the volume and epoch its owner file names.</summary>
    public IReadOnlyList<SnapshotNamespace> ListSnapshots()
    {
        var found = new List<SnapshotNamespace>();
        foreach (var id in ListVolumes())
        {
            if (ReadOwner(id) is { } snapshot)
            {
                found.Add(snapshot);
            }
        }
        return found;
    }

    /// <summary>Whether this id names a snapshot's copies here rather than a volume.</summary>
    public bool IsSnapshot(Guid id) => File.Exists(Path.Combine(VolumeDirectory(id), SnapshotOwnerFileName));

    private SnapshotNamespace? ReadOwner(Guid snapshotId)
    {
        var path = Path.Combine(VolumeDirectory(snapshotId), SnapshotOwnerFileName);
        if (!File.Exists(path))
        {
            return null;
        }
        var parts = File.ReadAllText(path).Split(' ', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        return parts.Length == 2 && Guid.TryParseExact(parts[0], "N", out var volumeId) && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var epoch)
            ? new SnapshotNamespace(snapshotId, volumeId, epoch)
            : null;
    }

    /// <summary>
    /// One segment of a deleted snapshot: its copy passes to <paramref name="previous"/> (the
    /// snapshot before it, whose reads looked at this copy) when that one has none of its own;
    /// otherwise it is removed. Returns true when it passed. The caller holds the segment's turn.
    /// </summary>
    public bool PassDown(Guid snapshotId, SnapshotNamespace? previous, long segmentIndex)
    {
        var copy = new SegmentAddress(snapshotId, segmentIndex);
        if (!HasFile(copy))
        {
            return false;
        }
        lock (_gate)
        {
            Close(copy);
        }
        if (previous is { } before && !HasFile(new SegmentAddress(before.SnapshotId, segmentIndex)))
        {
            EnsureSnapshotNamespace(before);
            var target = new SegmentAddress(before.SnapshotId, segmentIndex);
            // Version first, then checksums, then data: the data file's presence is what makes the
            // copy exist, so it moves last, whole, in one rename.
            _versions.Set(before.SnapshotId, segmentIndex, Version(copy));
            SyncVersions(before.SnapshotId);
            File.Move(ChecksumPath(copy), ChecksumPath(target), overwrite: true);
            File.Move(SegmentPath(copy), SegmentPath(target));
            SyncDirectory(VolumeDirectory(before.SnapshotId));
            return true;
        }
        File.Delete(SegmentPath(copy));
        File.Delete(ChecksumPath(copy));
        return false;
    }

    /// <summary>
    /// Replaces the segment with <paramref name="data"/> (the whole segment from offset 0) and
    /// <paramref name="version"/>, durably; blocks of zeros stay holes. A clone's materialization.
    /// </summary>
    public Task InstallDenseAsync(SegmentAddress segment, int segmentSize, ReadOnlyMemory<byte> data, long version)
    {
        var (extents, bytes) = SparseImage(data.Span);
        return InstallImageAsync(segment, segmentSize, extents, bytes, version);
    }

    /// <summary>A segment's whole contents from offset 0 as an image: its blocks that hold anything but zeros, back to back.</summary>
    public static (DataExtent[] Extents, byte[] Bytes) SparseImage(ReadOnlySpan<byte> span)
    {
        var extents = new List<DataExtent>();
        for (var at = 0; at < span.Length; at += BlockChecksums.BlockSize)
        {
            var length = Math.Min(BlockChecksums.BlockSize, span.Length - at);
            if (!span.Slice(at, length).ContainsAnyExcept((byte)0))
            {
                continue;
            }
            if (extents.Count > 0 && extents[^1].Offset + extents[^1].Length == at)
            {
                extents[^1] = extents[^1] with { Length = extents[^1].Length + length };
            }
            else
            {
                extents.Add(new DataExtent(at, length));
            }
        }
        var bytes = new byte[extents.Sum(e => e.Length)];
        var packed = 0;
        foreach (var extent in extents)
        {
            span.Slice(extent.Offset, extent.Length).CopyTo(bytes.AsSpan(packed));
            packed += extent.Length;
        }
        return ([.. extents], bytes);
    }

    /// <summary>Bytes the segment's file takes on disk (holes do not count); 0 when it has none.</summary>
    public long AllocatedBytes(SegmentAddress segment) => HasFile(segment) ? AllocatedBytes(SegmentPath(segment)) : 0;

    /// <summary>Removes what is left of a deleted snapshot here, once <see cref="PassDown"/> went over its segments.</summary>
    public void RemoveSnapshot(Guid snapshotId) => DeleteVolume(snapshotId);

    /// <summary>The ids of snapshots of the volume that have copies here.</summary>
    public IEnumerable<Guid> SnapshotsOf(Guid volumeId) => ListSnapshots().Where(s => s.VolumeId == volumeId).Select(s => s.SnapshotId);
}

/// <summary>Where a snapshot's copies live on a host: its id, and the volume and epoch it belongs to.</summary>
public readonly record struct SnapshotNamespace(Guid SnapshotId, Guid VolumeId, long Epoch);
