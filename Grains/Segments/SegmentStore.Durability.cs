using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Errors;
using OrleansStorage.Files;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>Fail-stop on disk errors, fsyncs of files and directories, and the native calls behind them.</summary>
public sealed partial class SegmentStore
{
    /// <summary>
    /// An error of the disk itself (EIO, ENOSPC, EROFS, EPERM on an immutable file): the store fails
    /// for good, as on a failed fsync, and the host goes Out. A file that is simply not there (a
    /// volume deleted meanwhile) is not one.
    /// </summary>
    private static bool IsDiskError(Exception ex) =>
        ex is (IOException and not FileNotFoundException and not DirectoryNotFoundException) or UnauthorizedAccessException;

    private void ThrowIfFailed()
    {
        if (Failure is { } failure)
        {
            throw new DiskFailedException(failure);
        }
    }

    /// <summary>Records the first failure of the disk and throws it; every later request is refused.</summary>
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private void Fail(string reason)
    {
        bool first;
        lock (_gate)
        {
            first = _failure is null;
            _failure ??= reason;
        }
        if (first)
        {
            Failed?.Invoke(reason);
        }
        throw new DiskFailedException(Failure!);
    }

    /// <summary>Fsyncs a segment's data and then its checksums.</summary>
    /// <summary>A segment's data and checksums, fsynced side by side.</summary>
    private Task FsyncAsync(Lease lease, SegmentAddress segment) =>
        Task.WhenAll(
            Task.Run(() => Sync(SegmentPath(segment), () => FsyncHandle(lease.Handle!))),
            Task.Run(() => Sync(ChecksumPath(segment), () => FsyncHandle(lease.Checksums!))));

    private static void FsyncHandle(SafeFileHandle handle)
    {
        if (!OperatingSystem.IsLinux())
        {
            RandomAccess.FlushToDisk(handle);
        }
        else if (Libc.Fsync(handle) != 0)
        {
            throw new IOException($"errno {Marshal.GetLastPInvokeError()}");
        }
    }

    private void SyncIntents(string path, SafeFileHandle handle) => Sync(path, () => RandomAccess.FlushToDisk(handle));

    private void SyncVersions(Guid volumeId) =>
        Sync(Path.Combine(VolumeDirectory(volumeId), SegmentVersions.FileName), () => _versions.Flush(volumeId));

    private void SyncDirectory(string directory) => Sync(directory, () => DurableFiles.FsyncDirectory(directory));

    /// <summary>One fsync, which the disk (or a test) may fail: then the store fails for good.</summary>
    private void Sync(string path, Action fsync)
    {
        try
        {
            if (_failsFsync(path))
            {
                throw new IOException("injected");
            }
            fsync();
        }
        catch (IOException ex)
        {
            Fail($"fsync of {path} failed: {ex.Message}");
        }
    }

    /// <summary>Fsyncs a volume's directory: every segment file created before it now has a durable entry.</summary>
    private void SyncVolumeDirectory(Guid volumeId)
    {
        // The entries stay listed until the fsync returned: a flush running beside this one must
        // not take them as durable while this fsync is still under way.
        long[] covered;
        lock (_gate)
        {
            covered = _newFiles.TryGetValue(volumeId, out var created) ? [.. created] : [];
        }
        SyncDirectory(VolumeDirectory(volumeId));
        lock (_gate)
        {
            if (_newFiles.TryGetValue(volumeId, out var created))
            {
                created.ExceptWith(covered); // files created since stay listed: this fsync may have missed them
                if (created.Count == 0)
                {
                    _newFiles.Remove(volumeId);
                }
            }
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
        return Libc.Fallocate(handle, FallocFlKeepSize | FallocFlPunchHole, offset, length) == 0;
    }

    private static long AllocatedBytes(string path)
    {
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64)
        {
            // struct stat on 64-bit Linux: st_blocks (512-byte units) is the 9th 8-byte field on
            // x86_64 and at byte 64 on aarch64 too (generic layout); read it without a full struct.
            Span<long> stat = stackalloc long[32];
            if (Libc.Stat(path, ref MemoryMarshal.GetReference(stat)) == 0)
            {
                return stat[8] * 512;
            }
        }
        return new FileInfo(path).Length;
    }
}
