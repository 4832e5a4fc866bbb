using System.Buffers;
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// The checksum side of the store: every block read is checked against its crc32c, every write
/// stores the checksums of the blocks it touches, and a block found bad is rewritten from a good
/// copy that the storage server fetched from another replica (docs/failures.md, "Silent corruption").
/// </summary>
public sealed partial class SegmentStore
{
    /// <summary>Written once every segment present has checksums (a store from before checksums gets them at its first open).</summary>
    public const string ChecksummedMarkerFileName = "checksummed";

    public string ChecksumPath(SegmentAddress segment) =>
        Path.Combine(VolumeDirectory(segment.VolumeId), segment.SegmentIndex.ToString("D10", CultureInfo.InvariantCulture) + BlockChecksums.Extension);

    /// <summary>
    /// What every block of the segment holds on this host, checked: the stored value of each block
    /// of the file (or of its checksums, whichever reaches further) and which of them fail their checksum.
    /// </summary>
    public async Task<SegmentCheck> CheckAsync(SegmentAddress segment, int segmentSize, CancellationToken cancellationToken = default)
    {
        try
        {
            return await CheckCoreAsync(segment, segmentSize, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"check of segment {segment.SegmentIndex} of volume {segment.VolumeId} failed: {ex.Message}");
            throw; // not reached: Fail throws
        }
    }

    private async Task<SegmentCheck> CheckCoreAsync(SegmentAddress segment, int segmentSize, CancellationToken cancellationToken = default)
    {
        ThrowIfFailed();
        using var lease = Acquire(segment, create: false);
        if (lease.Handle is null)
        {
            return new SegmentCheck([], []);
        }
        var dataBlocks = BlockChecksums.BlocksOf(0, (int)Math.Min(RandomAccess.GetLength(lease.Handle), segmentSize)).End;
        var storedBlocks = (int)Math.Min(RandomAccess.GetLength(lease.Checksums!) / sizeof(uint), BlockChecksums.BlocksOf(0, segmentSize).End);
        var blocks = Math.Max(dataBlocks, storedBlocks);
        var actual = new uint[blocks];
        var stored = new uint[blocks];
        BlockChecksums.Read(lease.Checksums, 0, stored);
        const int ChunkBlocks = 256; // 1 MiB at a time
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBlocks * BlockChecksums.BlockSize);
        try
        {
            for (var first = 0; first < blocks; first += ChunkBlocks)
            {
                var count = Math.Min(ChunkBlocks, blocks - first);
                var start = first * BlockChecksums.BlockSize;
                var length = (int)Math.Min((long)count * BlockChecksums.BlockSize, segmentSize - start);
                await ReadFullyAsync(lease.Handle, buffer.AsMemory(0, length), start, cancellationToken).ConfigureAwait(false);
                BlockChecksums.Compute(buffer.AsSpan(0, length), actual.AsSpan(first, count));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        var bad = new List<int>();
        for (var i = 0; i < blocks; i++)
        {
            if (actual[i] != stored[i])
            {
                bad.Add(i);
            }
        }
        return new SegmentCheck(actual, [.. bad]);
    }

    /// <summary>
    /// Rewrites whole blocks from <paramref name="firstBlock"/> with <paramref name="bytes"/> (a good
    /// copy from another replica) and their checksums, durably: the repaired content is what every
    /// replica already holds, so the write version does not change.
    /// </summary>
    public async Task RepairBlocksAsync(SegmentAddress segment, int segmentSize, int firstBlock, ReadOnlyMemory<byte> bytes)
    {
        try
        {
            await RepairBlocksCoreAsync(segment, segmentSize, firstBlock, bytes).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"repair of segment {segment.SegmentIndex} of volume {segment.VolumeId} failed: {ex.Message}");
        }
    }

    private async Task RepairBlocksCoreAsync(SegmentAddress segment, int segmentSize, int firstBlock, ReadOnlyMemory<byte> bytes)
    {
        var offset = firstBlock * BlockChecksums.BlockSize;
        CheckRange(segmentSize, offset, bytes.Length);
        ThrowIfFailed();
        using var writing = await BeginDataWriteAsync(segment).ConfigureAwait(false);
        using var lease = Acquire(segment, create: true);
        await RandomAccess.WriteAsync(lease.Handle!, bytes, offset).ConfigureAwait(false);
        var checksums = new uint[BlockChecksums.BlocksOf(offset, bytes.Length).End - firstBlock];
        BlockChecksums.Compute(bytes.Span, checksums);
        BlockChecksums.Write(lease.Checksums!, firstBlock, checksums);
        await FsyncAsync(lease, segment).ConfigureAwait(false);
        SyncVolumeDirectory(segment.VolumeId);
    }

    /// <summary>Reads [offset, +destination.Length) after checking every block it touches.</summary>
    private static async ValueTask ReadVerifiedAsync(Lease lease, SegmentAddress segment, int segmentSize, int offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var (first, end) = BlockChecksums.BlocksOf(offset, destination.Length);
        var alignedStart = first * BlockChecksums.BlockSize;
        var alignedLength = (int)(Math.Min((long)end * BlockChecksums.BlockSize, segmentSize) - alignedStart);
        var stored = ArrayPool<uint>.Shared.Rent(end - first);
        byte[]? rented = null;
        try
        {
            BlockChecksums.Read(lease.Checksums, first, stored.AsSpan(0, end - first));
            // Block-aligned reads (what NBD clients send) land in place; others read whole blocks aside.
            var blocks = alignedStart == offset && alignedLength == destination.Length
                ? destination
                : (rented = ArrayPool<byte>.Shared.Rent(alignedLength)).AsMemory(0, alignedLength);
            await ReadFullyAsync(lease.Handle!, blocks, alignedStart, cancellationToken).ConfigureAwait(false);
            var bad = BlockChecksums.Mismatched(blocks.Span, first, stored.AsSpan(0, end - first));
            if (bad.Count > 0)
            {
                destination.Span.Clear();
                throw new CorruptBlocksException(segment, bad);
            }
            if (rented is not null)
            {
                blocks.Span.Slice(offset - alignedStart, destination.Length).CopyTo(destination.Span);
            }
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(stored);
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>
    /// The checksums of blocks [first, end) once <paramref name="data"/> (or zeros, for a trim:
    /// null) is written at <paramref name="offset"/>. A block written only in part keeps the rest of
    /// its bytes, so it is read first, and checked unless <paramref name="verifyPartialBlocks"/> is false.
    /// </summary>
    private async ValueTask<(int FirstBlock, uint[] Checksums)> ChecksumsAfterWriteAsync(
        Lease lease, SegmentAddress segment, int segmentSize, int offset, ReadOnlyMemory<byte>? data, int length, bool verifyPartialBlocks, CancellationToken cancellationToken)
    {
        var (first, end) = BlockChecksums.BlocksOf(offset, length);
        var checksums = new uint[end - first];
        var writeEnd = offset + length;
        // Blocks the write covers whole come from the data alone, in one run (a trimmed one is zeros).
        var wholeFirst = BlockChecksums.BlocksOf(offset, 0).First + (offset % BlockChecksums.BlockSize == 0 ? 0 : 1);
        var wholeEnd = writeEnd >= segmentSize ? end : writeEnd / BlockChecksums.BlockSize;
        if (data is { } all && wholeEnd > wholeFirst)
        {
            var from = (wholeFirst * BlockChecksums.BlockSize) - offset;
            var to = Math.Min(wholeEnd * BlockChecksums.BlockSize, writeEnd) - offset;
            BlockChecksums.Compute(all.Span[from..to], checksums.AsSpan(wholeFirst - first, wholeEnd - wholeFirst));
        }
        List<int>? bad = null;
        byte[]? block = null;
        uint[]? stored = null;
        for (var b = first; b < end; b++)
        {
            var blockStart = b * BlockChecksums.BlockSize;
            var blockLength = Math.Min(BlockChecksums.BlockSize, segmentSize - blockStart);
            if (offset <= blockStart && writeEnd >= blockStart + blockLength)
            {
                continue; // covered whole: computed above
            }
            block ??= new byte[BlockChecksums.BlockSize];
            var old = block.AsMemory(0, blockLength);
            await ReadFullyAsync(lease.Handle!, old, blockStart, cancellationToken).ConfigureAwait(false);
            if (verifyPartialBlocks)
            {
                stored ??= new uint[1];
                BlockChecksums.Read(lease.Checksums, b, stored);
                if (BlockChecksums.Stored(old.Span) != stored[0])
                {
                    (bad ??= []).Add(b);
                    continue;
                }
            }
            var from = Math.Max(offset, blockStart);
            var to = Math.Min(writeEnd, blockStart + blockLength);
            var overlay = old.Span.Slice(from - blockStart, to - from);
            if (data is { } part)
            {
                part.Span.Slice(from - offset, to - from).CopyTo(overlay);
            }
            else
            {
                overlay.Clear();
            }
            checksums[b - first] = BlockChecksums.Stored(old.Span);
        }
        return bad is null ? (first, checksums) : throw new CorruptBlocksException(segment, bad);
    }

    /// <summary>The checksums of a segment made of <paramref name="extents"/> (holes elsewhere), whose bytes are back to back in <paramref name="bytes"/>.</summary>
    private static uint[] ImageChecksums(int segmentSize, DataExtent[] extents, ReadOnlySpan<byte> bytes)
    {
        var end = extents.Length == 0 ? 0 : extents.Max(e => e.Offset + e.Length);
        var checksums = new uint[BlockChecksums.BlocksOf(0, end).End];
        var block = new byte[BlockChecksums.BlockSize];
        var extent = 0;
        var extentBytesAt = 0; // where extents[extent]'s bytes start in bytes
        for (var b = 0; b < checksums.Length; b++)
        {
            var blockStart = b * BlockChecksums.BlockSize;
            var blockEnd = Math.Min(blockStart + BlockChecksums.BlockSize, segmentSize);
            Array.Clear(block);
            var any = false;
            // Extents are in offset order and do not overlap; one may span many blocks.
            while (extent < extents.Length && extents[extent].Offset + extents[extent].Length <= blockStart)
            {
                extentBytesAt += extents[extent++].Length;
            }
            for (int e = extent, at = extentBytesAt; e < extents.Length && extents[e].Offset < blockEnd; at += extents[e++].Length)
            {
                var from = Math.Max(extents[e].Offset, blockStart);
                var to = Math.Min(extents[e].Offset + extents[e].Length, blockEnd);
                bytes.Slice(at + (from - extents[e].Offset), to - from).CopyTo(block.AsSpan(from - blockStart));
                any = true;
            }
            checksums[b] = any ? BlockChecksums.Stored(block.AsSpan(0, blockEnd - blockStart)) : 0;
        }
        return checksums;
    }

    /// <summary>Recomputes a segment's checksums from its data as it is (after an unclean shutdown, or for a store from before checksums).</summary>
    private void RebuildChecksums(SegmentAddress segment)
    {
        var path = SegmentPath(segment);
        if (!File.Exists(path))
        {
            return;
        }
        var data = File.ReadAllBytes(path);
        var checksums = new uint[BlockChecksums.BlocksOf(0, data.Length).End];
        BlockChecksums.Compute(data, checksums);
        using var handle = File.OpenHandle(ChecksumPath(segment), FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
        BlockChecksums.Write(handle, 0, checksums);
        Sync(ChecksumPath(segment), () => FsyncHandle(handle));
    }

    /// <summary>
    /// A store written before checksums existed gets them from its data as it stands, once; from
    /// then on (the marker is durable) a missing checksum file means lost checksums, not an old store.
    /// </summary>
    private void ChecksumEverySegmentOnce()
    {
        var marker = Path.Combine(_volumesRoot, ChecksummedMarkerFileName);
        if (File.Exists(marker))
        {
            return;
        }
        foreach (var volumeId in ListVolumes())
        {
            foreach (var index in ListSegments(volumeId))
            {
                RebuildChecksums(new SegmentAddress(volumeId, index));
            }
            SyncDirectory(VolumeDirectory(volumeId));
        }
        using (var file = new FileStream(marker, FileMode.Create, FileAccess.Write))
        {
            file.Flush(flushToDisk: true);
        }
        SyncDirectory(_volumesRoot);
    }

    /// <summary>Opens (creating if needed) the checksum file of a segment whose data file is open.</summary>
    private SafeFileHandle OpenChecksumFile(SegmentAddress segment)
    {
        var path = ChecksumPath(segment);
        var existed = File.Exists(path);
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        if (!existed)
        {
            RememberNewFile(segment);
        }
        return handle;
    }

    private static async ValueTask ReadFullyAsync(SafeFileHandle handle, Memory<byte> destination, long offset, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < destination.Length)
        {
            var read = await RandomAccess.ReadAsync(handle, destination[filled..], offset + filled, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                break; // end of file: the rest was never written
            }
            filled += read;
        }
        destination.Span[filled..].Clear();
    }
}
