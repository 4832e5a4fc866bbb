using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Cli;

/// <summary>
/// What <c>ostor put</c> reads from. A regular file and a block device have a size and are read
/// at any offset, several chunks at once; a block device's size comes from the kernel
/// (<c>BLKGETSIZE64</c>), as its file size reads 0. Anything else (a pipe, a character device
/// such as /dev/zero, standard input as "-") is a stream, read in order to its end.
/// </summary>
public sealed partial class TransferSource : IDisposable
{
    /// <summary>_IOR(0x12, 114, size_t): the size in bytes of a block device.</summary>
    private const ulong BlockGetSize64 = 0x80081272;

    private FileStream? _stream;

    private TransferSource(string path, SafeFileHandle handle, long? length, bool isBlockDevice)
    {
        Path = path;
        Handle = handle;
        Length = length;
        IsBlockDevice = isBlockDevice;
    }

    public string Path { get; }

    public SafeFileHandle Handle { get; }

    /// <summary>The bytes it holds; null for a stream, whose end is found by reading.</summary>
    public long? Length { get; }

    public bool IsBlockDevice { get; }

    public static TransferSource Open(string path)
    {
        if (path == "-")
        {
            return new TransferSource("standard input", new SafeFileHandle(0, ownsHandle: false), null, isBlockDevice: false);
        }
        if (Directory.Exists(path))
        {
            throw new InvalidRequestException($"'{path}' is a directory");
        }
        if (!File.Exists(path))
        {
            throw new InvalidRequestException($"no such file: '{path}'");
        }
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.Asynchronous);
        try
        {
            if (!OperatingSystem.IsWindows() && IoctlGetSize(handle.DangerousGetHandle().ToInt32(), BlockGetSize64, out var deviceBytes) == 0)
            {
                return new TransferSource(path, handle, checked((long)deviceBytes), isBlockDevice: true);
            }
            // No size (a pipe cannot seek) or a size of 0 (an empty file, /dev/zero): read it to its end.
            var length = SizeOrZero(handle);
            return new TransferSource(path, handle, length > 0 ? length : null, isBlockDevice: false);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The source read in order (one stream for its whole life: closing a FileStream closes its handle).</summary>
    public FileStream Stream => _stream ??= new FileStream(Handle, FileAccess.Read, bufferSize: 0, isAsync: Handle.IsAsync);

    private static long SizeOrZero(SafeFileHandle handle)
    {
        try
        {
            return RandomAccess.GetLength(handle);
        }
        catch (NotSupportedException)
        {
            return 0;
        }
    }

    public void Dispose()
    {
        _stream?.Dispose();
        Handle.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlGetSize(int fd, ulong request, out ulong bytes);
}
