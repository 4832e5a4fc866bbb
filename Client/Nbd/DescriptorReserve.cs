using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// The last file descriptors below the process's limit (RLIMIT_NOFILE), which the NBD server
/// leaves to the .NET runtime: no client connection is kept in them. The runtime needs
/// descriptors of its own at moments nobody chooses: starting a thread takes a pipe (two
/// descriptors, for the new thread's suspended start), and a thread pool that cannot start a
/// thread for want of them ends the process ("Out of memory.": a worker's OutOfMemoryException
/// is unhandled, a gate thread's a fail-fast). Clients that filled every descriptor so killed
/// the server whenever the pool grew.
/// </summary>
internal static partial class DescriptorReserve
{
    /// <summary>How many of the last descriptors below the limit are the runtime's: room for a few thread starts at once and its other short uses.</summary>
    public const int Size = 8;

    private const int RlimitNofile = 7; // Linux

    /// <summary>
    /// Whether the socket's descriptor is one of the reserve, so the process's own room is nearly
    /// gone: the kernel gives a new socket the lowest free number, so every one below it is taken.
    /// The limit is read each time: it can be changed while the process runs (prlimit).
    /// </summary>
    public static bool Holds(Socket socket, out long limit)
    {
        limit = 0;
        if (!OperatingSystem.IsLinux() || GetRLimit(RlimitNofile, out var current) != 0 || current.Soft > long.MaxValue)
        {
            return false;
        }
        limit = (long)current.Soft;
        return socket.Handle.ToInt64() >= limit - Size;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Soft;
        public ulong Hard;
    }

    [LibraryImport("libc", EntryPoint = "getrlimit")]
    private static partial int GetRLimit(int resource, out RLimit limit);
}
