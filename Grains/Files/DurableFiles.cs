using System.Runtime.InteropServices;

namespace OrleansStorage.Files;

/// <summary>
/// The few POSIX calls that make metadata survive a power loss, in one place: fsync of a
/// directory (so a created, renamed or deleted entry is on disk), a file replaced atomically
/// (temporary file, fsync, rename, fsync of the directory), and an exclusive advisory lock on a
/// directory that dies with the process holding it.
/// </summary>
public static partial class DurableFiles
{
    private const int ReadOnly = 0;
    private const int DirectoryOnly = 0x10000; // O_DIRECTORY on Linux
    private const int CloseOnExec = 0x80000;   // O_CLOEXEC
    private const int LockExclusive = 2;       // LOCK_EX
    private const int LockNonBlocking = 4;     // LOCK_NB
    private const int WouldBlock = 11;         // EWOULDBLOCK

    /// <summary>Makes the entries of <paramref name="directory"/> durable. A failure is an error: the caller must not report success.</summary>
    public static void FsyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        var fd = Libc.Open(directory, ReadOnly | DirectoryOnly | CloseOnExec);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory '{directory}' to fsync it (errno {Marshal.GetLastPInvokeError()})");
        }
        try
        {
            if (Libc.Fsync(fd) != 0)
            {
                throw new IOException($"fsync of directory '{directory}' failed (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            _ = Libc.Close(fd);
        }
    }

    /// <summary>
    /// Replaces <paramref name="path"/> with <paramref name="contents"/> so that after a crash it
    /// holds either the old or the new contents, never a mix: written to a temporary file, fsynced,
    /// renamed over the target, and the directory fsynced. The file is its owner's alone (0600).
    /// </summary>
    public static void WriteAtomically(string path, ReadOnlySpan<byte> contents)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var temporary = path + ".tmp";
        File.Delete(temporary); // a leftover of a crash keeps its mode; a new one is created private
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (OperatingSystem.IsLinux())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite; // the host's own (PrivateFiles), whatever the umask
        }
        using (var file = new FileStream(temporary, options))
        {
            file.Write(contents);
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        FsyncDirectory(directory);
    }

    /// <summary>
    /// Takes an exclusive lock on <paramref name="directory"/> (flock), held until the returned
    /// handle is disposed or the process ends. Null when another process holds it.
    /// </summary>
    public static IDisposable? TryLockDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return new DirectoryLock(-1);
        }
        var fd = Libc.Open(directory, ReadOnly | DirectoryOnly | CloseOnExec);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory '{directory}' (errno {Marshal.GetLastPInvokeError()})");
        }
        if (Libc.Flock(fd, LockExclusive | LockNonBlocking) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            _ = Libc.Close(fd);
            return errno == WouldBlock ? null : throw new IOException($"cannot lock directory '{directory}' (errno {errno})");
        }
        return new DirectoryLock(fd);
    }

    private sealed class DirectoryLock(int fd) : IDisposable
    {
        private int _fd = fd;

        public void Dispose()
        {
            var fd = Interlocked.Exchange(ref _fd, -1);
            if (fd >= 0)
            {
                _ = Libc.Close(fd); // closing the last descriptor releases the flock
            }
        }
    }

    /// <summary>
    /// What tells one file or directory from every other on its file system, also one that gets
    /// the inode number of a file deleted before it: the inode number and the birth time (statx),
    /// as "inode-seconds-nanoseconds". Where the file system keeps no birth time, the inode alone.
    /// </summary>
    public static string Identity(string path)
    {
        var buffer = new byte[256];
        if (Libc.Statx(AtCurrentDirectory, path, AtSymlinkNoFollow, StatxInode | StatxBirthTime, buffer) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno == NoSuchEntry
                ? new FileNotFoundException($"'{path}' is gone", path)
                : new IOException($"statx of '{path}' failed (errno {errno})");
        }
        // struct statx: stx_mask at 0, stx_ino at 32, stx_btime (tv_sec, tv_nsec) at 80 and 88.
        var mask = BitConverter.ToUInt32(buffer, 0);
        var inode = BitConverter.ToUInt64(buffer, 32);
        return (mask & StatxBirthTime) != 0
            ? $"{inode}-{BitConverter.ToInt64(buffer, 80)}-{BitConverter.ToUInt32(buffer, 88)}"
            : inode.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private const int AtCurrentDirectory = -100; // AT_FDCWD
    private const int AtSymlinkNoFollow = 0x100;  // AT_SYMLINK_NOFOLLOW
    private const uint StatxInode = 0x100;         // STATX_INO
    private const uint StatxBirthTime = 0x800;     // STATX_BTIME
    private const int NoSuchEntry = 2;             // ENOENT
}
