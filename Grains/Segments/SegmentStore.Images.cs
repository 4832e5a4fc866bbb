using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Errors;
using OrleansStorage.Files;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>Whole segments as images: what a copy to another replica reads, and what a pending replica installs.</summary>
public sealed partial class SegmentStore
{
    /// <summary>
    /// The whole segment as its data extents and their bytes, back to back: what a copy to
    /// another replica needs (holes stay holes).
    /// </summary>
    public async Task<(DataExtent[] Extents, byte[] Bytes)> ReadImageAsync(SegmentAddress segment, int segmentSize)
    {
        var extents = DataExtents(segment, segmentSize, 0, segmentSize);
        var bytes = new byte[extents.Sum(e => (long)e.Length)];
        var at = 0;
        foreach (var extent in extents)
        {
            await ReadAsync(segment, segmentSize, extent.Offset, bytes.AsMemory(at, extent.Length)).ConfigureAwait(false);
            at += extent.Length;
        }
        return (extents, bytes);
    }

    /// <summary>Replaces the segment with a copy from another replica, with that replica's version.</summary>
    public async Task InstallImageAsync(SegmentAddress segment, int segmentSize, DataExtent[] extents, ReadOnlyMemory<byte> bytes, long version)
    {
        try
        {
            await InstallImageCoreAsync(segment, segmentSize, extents, bytes, version).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"copy into segment {segment.SegmentIndex} of volume {segment.VolumeId} failed: {ex.Message}");
        }
    }

    private async Task InstallImageCoreAsync(SegmentAddress segment, int segmentSize, DataExtent[] extents, ReadOnlyMemory<byte> bytes, long version)
    {
        CheckImage(segmentSize, extents, bytes);
        ThrowIfFailed();
        using (await BeginDataWriteAsync(segment).ConfigureAwait(false))
        using (var lease = Acquire(segment, create: true))
        {
            RandomAccess.SetLength(lease.Handle!, 0);
            var at = 0;
            foreach (var extent in extents)
            {
                await RandomAccess.WriteAsync(lease.Handle!, bytes.Slice(at, extent.Length), extent.Offset).ConfigureAwait(false);
                at += extent.Length;
            }
            var checksums = ImageChecksums(segmentSize, extents, bytes.Span);
            RandomAccess.SetLength(lease.Checksums!, 0);
            BlockChecksums.Write(lease.Checksums!, 0, checksums);
            // Durable before the copy reports it: the leaving replica deletes its copy after that.
            await FsyncAsync(lease, segment).ConfigureAwait(false);
        }
        _versions.Set(segment.VolumeId, segment.SegmentIndex, version);
        SyncVersions(segment.VolumeId);
        SyncVolumeDirectory(segment.VolumeId);
    }

    private static void CheckImage(int segmentSize, DataExtent[] extents, ReadOnlyMemory<byte> bytes)
    {
        long total = 0;
        foreach (var extent in extents)
        {
            CheckRange(segmentSize, extent.Offset, extent.Length);
            total += extent.Length;
        }
        if (total != bytes.Length)
        {
            throw new InvalidRequestException($"segment image carries {bytes.Length} bytes for extents totalling {total}");
        }
    }
}
