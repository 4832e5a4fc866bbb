using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Errors;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// A host's segment files: one sparse file per (volume, segment), created on first write, under
/// <c>{root}/volumes/{volume-guid}/{segment-number}.seg</c>. Paths are built from GUIDs and numbers
/// only, never from user strings. Never-written bytes (holes, or past the end of the file, or
/// no file at all) read as zeros. Handles stay open; I/O goes through <see cref="RandomAccess"/>.
/// </summary>
public sealed partial class SegmentStore : IDisposable
{
    private const string SegmentExtension = ".seg";
    private readonly string _volumesRoot;
    private readonly ConcurrentDictionary<SegmentAddress, SafeFileHandle> _handles = new();
    private readonly Lock _openGate = new();

    public SegmentStore(string dataDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        _volumesRoot = Path.Combine(Path.GetFullPath(dataDirectory), "volumes");
        Directory.CreateDirectory(_volumesRoot);
    }

    public string VolumesRoot => _volumesRoot;

    public string SegmentPath(SegmentAddress segment) =>
        Path.Combine(VolumeDirectory(segment.VolumeId), segment.SegmentIndex.ToString("D10", CultureInfo.InvariantCulture) + SegmentExtension);

    private string VolumeDirectory(Guid volumeId) => Path.Combine(_volumesRoot, volumeId.ToString("N"));

    /// <summary>Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>; holes read as zeros.</summary>
    public async ValueTask ReadAsync(SegmentAddress segment, int segmentSize, int offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        CheckRange(segmentSize, offset, destination.Length);
        var handle = OpenExisting(segment);
        var filled = 0;
        if (handle is not null)
        {
            while (filled < destination.Length)
            {
                var read = await RandomAccess.ReadAsync(handle, destination[filled..], offset + filled, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    break; // end of file: the rest was never written
                }
                filled += read;
            }
        }
        destination.Span[filled..].Clear();
    }

    public async ValueTask WriteAsync(SegmentAddress segment, int segmentSize, int offset, ReadOnlyMemory<byte> data, bool durable, CancellationToken cancellationToken = default)
    {
        CheckRange(segmentSize, offset, data.Length);
        if (data.IsEmpty)
        {
            return;
        }
        var handle = OpenForWrite(segment);
        await RandomAccess.WriteAsync(handle, data, offset, cancellationToken).ConfigureAwait(false);
        if (durable)
        {
            await FlushHandleAsync(handle).ConfigureAwait(false);
        }
    }

    /// <summary>Punches a hole so the range reads as zeros and frees its blocks.</summary>
    public async ValueTask TrimAsync(SegmentAddress segment, int segmentSize, int offset, int length, CancellationToken cancellationToken = default)
    {
        CheckRange(segmentSize, offset, length);
        var handle = OpenExisting(segment);
        if (handle is null || length == 0)
        {
            return;
        }
        var fileLength = RandomAccess.GetLength(handle);
        if (offset >= fileLength)
        {
            return; // nothing was ever written there
        }
        if (!PunchHole(handle, offset, length))
        {
            // File systems without hole punching: write zeros instead (same contents, no space freed).
            var end = Math.Min(fileLength, (long)offset + length);
            var zeros = new byte[Math.Min(end - offset, 1 << 20)];
            for (long at = offset; at < end; at += zeros.Length)
            {
                var count = (int)Math.Min(zeros.Length, end - at);
                await RandomAccess.WriteAsync(handle, zeros.AsMemory(0, count), at, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// The ranges of [offset, offset+length) that hold data, found with lseek(SEEK_DATA/SEEK_HOLE);
    /// holes and the space past the end of the file are left out. Where the file system cannot
    /// tell, the whole written part of the range counts as data (always a safe answer).
    /// </summary>
    public DataExtent[] DataExtents(SegmentAddress segment, int segmentSize, int offset, int length)
    {
        CheckRange(segmentSize, offset, length);
        var handle = OpenExisting(segment);
        if (handle is null || length == 0)
        {
            return [];
        }
        var end = Math.Min((long)offset + length, RandomAccess.GetLength(handle));
        if (end <= offset)
        {
            return [];
        }
        if (!OperatingSystem.IsLinux())
        {
            return [new DataExtent(offset, (int)(end - offset))];
        }
        const int SeekData = 3;
        const int SeekHole = 4;
        var extents = new List<DataExtent>();
        long position = offset;
        while (position < end)
        {
            var dataStart = Lseek(handle, position, SeekData);
            if (dataStart < 0)
            {
                if (Marshal.GetLastPInvokeError() == 6 /* ENXIO: no data past position */)
                {
                    break;
                }
                return [new DataExtent(offset, (int)(end - offset))];
            }
            if (dataStart >= end)
            {
                break;
            }
            var holeStart = Lseek(handle, dataStart, SeekHole);
            var dataEnd = holeStart < 0 ? end : Math.Min(holeStart, end);
            extents.Add(new DataExtent((int)dataStart, (int)(dataEnd - dataStart)));
            position = dataEnd;
        }
        return [.. extents];
    }

    /// <summary>Makes every completed write to the volume's segments durable (fsync).</summary>
    public async Task FlushVolumeAsync(Guid volumeId)
    {
        var flushes = _handles.Where(kv => kv.Key.VolumeId == volumeId).Select(kv => FlushHandleAsync(kv.Value));
        await Task.WhenAll(flushes).ConfigureAwait(false);
        // The directory entries of newly created segment files must be durable too.
        FsyncDirectory(VolumeDirectory(volumeId));
    }

    /// <summary>Closes and removes every segment file of the volume.</summary>
    public void DeleteVolume(Guid volumeId)
    {
        foreach (var key in _handles.Keys.Where(k => k.VolumeId == volumeId).ToList())
        {
            if (_handles.TryRemove(key, out var handle))
            {
                handle.Dispose();
            }
        }
        var directory = VolumeDirectory(volumeId);
        if (Directory.Exists(directory))
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>The volumes that have at least a directory on this host.</summary>
    public IReadOnlyList<Guid> ListVolumes() =>
        Directory.EnumerateDirectories(_volumesRoot)
            .Select(Path.GetFileName)
            .Select(name => Guid.TryParseExact(name, "N", out var id) ? id : Guid.Empty)
            .Where(id => id != Guid.Empty)
            .ToList();

    /// <summary>Bytes allocated on disk by segment files (holes do not count), and how many files there are.</summary>
    public (long BytesUsed, int SegmentFiles) Usage()
    {
        long bytes = 0;
        var files = 0;
        foreach (var file in Directory.EnumerateFiles(_volumesRoot, "*" + SegmentExtension, SearchOption.AllDirectories))
        {
            files++;
            bytes += AllocatedBytes(file);
        }
        return (bytes, files);
    }

    public void Dispose()
    {
        foreach (var handle in _handles.Values)
        {
            handle.Dispose();
        }
        _handles.Clear();
    }

    private static void CheckRange(int segmentSize, int offset, int length)
    {
        if (offset < 0 || length < 0 || (long)offset + length > segmentSize)
        {
            throw new InvalidRequestException($"range [{offset}, {(long)offset + length}) is outside a segment of {segmentSize} bytes");
        }
    }

    private SafeFileHandle? OpenExisting(SegmentAddress segment)
    {
        if (_handles.TryGetValue(segment, out var handle))
        {
            return handle;
        }
        var path = SegmentPath(segment);
        if (!File.Exists(path))
        {
            return null;
        }
        return OpenForWrite(segment);
    }

    private SafeFileHandle OpenForWrite(SegmentAddress segment)
    {
        if (_handles.TryGetValue(segment, out var handle))
        {
            return handle;
        }
        lock (_openGate)
        {
            if (_handles.TryGetValue(segment, out handle))
            {
                return handle;
            }
            var path = SegmentPath(segment);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous);
            _handles[segment] = handle;
            return handle;
        }
    }

    private static Task FlushHandleAsync(SafeFileHandle handle) =>
        Task.Run(() =>
        {
            if (OperatingSystem.IsLinux())
            {
                if (Fsync(handle) != 0)
                {
                    throw new IOException($"fsync failed with errno {Marshal.GetLastPInvokeError()}");
                }
            }
            else
            {
                using var stream = new FileStream(handle, FileAccess.ReadWrite);
                stream.Flush(flushToDisk: true);
            }
        });

    private static void FsyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux() || !Directory.Exists(directory))
        {
            return;
        }
        var fd = Open(directory, 0 /* O_RDONLY */);
        if (fd >= 0)
        {
            _ = FsyncFd(fd);
            _ = Close(fd);
        }
    }

    private static bool PunchHole(SafeFileHandle handle, long offset, long length)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }
        const int FallocFlKeepSize = 0x01;
        const int FallocFlPunchHole = 0x02;
        return Fallocate(handle, FallocFlKeepSize | FallocFlPunchHole, offset, length) == 0;
    }

    private static long AllocatedBytes(string path)
    {
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64)
        {
            // struct stat on 64-bit Linux: st_blocks (512-byte units) is the 9th 8-byte field on
            // x86_64 and at byte 64 on aarch64 too (generic layout); read it without a full struct.
            Span<long> stat = stackalloc long[32];
            if (Stat(path, ref MemoryMarshal.GetReference(stat)) == 0)
            {
                return stat[8] * 512;
            }
        }
        return new FileInfo(path).Length;
    }

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(SafeFileHandle fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FsyncFd(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long Lseek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int Fallocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Stat(string path, ref long statBuffer);
}
