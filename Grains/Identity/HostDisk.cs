using System.Globalization;
using System.Text;
using OrleansStorage.Errors;
using OrleansStorage.Files;
using Orleans.Serialization;
using OrleansStorage.Maps;

namespace OrleansStorage.Identity;

/// <summary>
/// A host's data directory as a whole: locked for this process while it runs, its superblock (the
/// cluster and host it belongs to), and the last cluster map the host adopted, kept next to the
/// segments so that a lost database can be rebuilt from the disks (docs/epoch-protocol.md).
/// Opened once by <see cref="DataDirectoryCheck"/> before the silo starts.
/// </summary>
public sealed class HostDisk(string root, string hostId, Serializer serializer) : IDisposable
{
    public const string MapFileName = "cluster-map.bin";
    public const string VolumesFolderName = "volumes";

    private readonly Lock _gate = new();
    private IDisposable? _lock;
    private Superblock? _superblock;

    public string Root { get; } = Path.GetFullPath(root);

    public string HostId { get; } = hostId;

    public string SuperblockPath => Path.Combine(Root, Superblock.FileName);

    public string MapPath => Path.Combine(Root, MapFileName);

    public const string LeaseGenerationFileName = "lease-generation";

    public string LeaseGenerationPath => Path.Combine(Root, LeaseGenerationFileName);

    public bool IsOpen => _lock is not null;

    /// <summary>
    /// The size of the filesystem that holds the data directory (not of the root filesystem: a
    /// data directory on its own disk offers that disk).
    /// </summary>
    public long FilesystemSize => FilesystemSizeOf(Root);

    public static long FilesystemSizeOf(string directory) => new DriveInfo(Path.GetFullPath(directory)).TotalSize;

    /// <summary>The share of the data directory's file system that is in use (by anything, not only by us).</summary>
    public double FilesystemUsedFraction
    {
        get
        {
            var drive = new DriveInfo(Path.GetFullPath(Root));
            return drive.TotalSize == 0 ? 1 : 1 - ((double)drive.AvailableFreeSpace / drive.TotalSize);
        }
    }

    /// <summary>The superblock, or null for a data directory no cluster has claimed yet.</summary>
    public Superblock? Superblock
    {
        get
        {
            lock (_gate)
            {
                return _superblock;
            }
        }
    }

    /// <summary>Whether segment files of any volume are present (a directory from before superblocks has data but none).</summary>
    public bool HoldsSegments =>
        Directory.Exists(Path.Combine(Root, VolumesFolderName))
        && Directory.EnumerateFileSystemEntries(Path.Combine(Root, VolumesFolderName)).Any();

    /// <summary>
    /// Creates the directory if it does not exist, locks it, reads its superblock, and keeps it
    /// private (<see cref="KeepPrivate"/>). Refuses a path that is not a directory, a directory
    /// another process has locked, an unreadable superblock, one of another host, and one that was
    /// opened to other users. Writes nothing but a missing, empty directory and, once, the modes
    /// and superblock of a directory from a version that did not keep files private.
    /// </summary>
    public void Open()
    {
        if (File.Exists(Root))
        {
            throw new HostStartupException($"data directory '{Root}' is a file, not a directory");
        }
        try
        {
            Directory.CreateDirectory(Root);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new HostStartupException($"data directory '{Root}' cannot be created: {ex.Message}");
        }
        var directoryLock = DurableFiles.TryLockDirectory(Root)
            ?? throw new HostStartupException($"data directory '{Root}' is in use by another running ostor-silo; one directory serves one silo");
        try
        {
            var superblock = ReadSuperblock();
            if (superblock is not null && !string.Equals(superblock.HostId, HostId, StringComparison.Ordinal))
            {
                throw new HostStartupException(
                    $"data directory '{Root}' belongs to host '{superblock.HostId}' of cluster {superblock.ClusterId}, but this silo is configured as host '{HostId}'; start it with --host-id {superblock.HostId} or give it its own --data");
            }
            superblock = KeepPrivate(superblock);
            lock (_gate)
            {
                _superblock = superblock;
                _lock = directoryLock;
            }
        }
        catch
        {
            directoryLock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Records that this directory belongs to <paramref name="clusterId"/>: writes the superblock if
    /// there is none; refuses a directory that belongs to another cluster.
    /// </summary>
    public void Claim(Guid clusterId)
    {
        lock (_gate)
        {
            if (_superblock is { } existing)
            {
                if (existing.ClusterId != clusterId)
                {
                    throw new ForeignClusterException(
                        $"host '{HostId}': data directory '{Root}' belongs to cluster {existing.ClusterId}, not to cluster {clusterId}");
                }
                return;
            }
            var created = new Superblock(Superblock.CurrentFormat, clusterId, HostId, DateTimeOffset.UtcNow, FilesPrivate: true);
            DurableFiles.WriteAtomically(SuperblockPath, created.ToBytes());
            _superblock = created;
        }
    }

    /// <summary>
    /// Keeps <paramref name="map"/> as the last adopted map, atomically, before the host acts on it.
    /// Stored with the Orleans serializer, like the map in the database, so it follows the wire
    /// types' [Alias] and [Id]s across versions.
    /// </summary>
    public void SaveMap(ClusterMap map) => DurableFiles.WriteAtomically(MapPath, Serialize(map));

    /// <summary>A map in the format it is saved in (and sent in by the data port's Map operation).</summary>
    public byte[] Serialize(ClusterMap map) => serializer.SerializeToArray(map);

    /// <summary>The last adopted map as saved, or null if the host never adopted one.</summary>
    public ClusterMap? LoadMap() =>
        File.Exists(MapPath) ? serializer.Deserialize<ClusterMap>(File.ReadAllBytes(MapPath))?.Normalized() : null;

    /// <summary>
    /// Keeps the newest management generation this host took a lease from (PrimaryLease.Generation),
    /// atomically: written once per management failover, read at start.
    /// </summary>
    public void SaveLeaseGeneration(long generation) =>
        DurableFiles.WriteAtomically(LeaseGenerationPath, Encoding.ASCII.GetBytes(generation.ToString(CultureInfo.InvariantCulture)));

    /// <summary>The generation kept by <see cref="SaveLeaseGeneration"/>, or 0 if none was.</summary>
    public long LoadLeaseGeneration()
    {
        if (!File.Exists(LeaseGenerationPath))
        {
            return 0;
        }
        var text = File.ReadAllText(LeaseGenerationPath).Trim();
        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var generation)
            ? generation
            : throw new HostStartupException($"{LeaseGenerationPath} holds '{text}', not a management generation; delete it only once no management activation older than the current one can be running");
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _lock?.Dispose();
            _lock = null;
        }
    }

    /// <summary>
    /// A directory this version claimed is 0700 from the start: one found open to others was
    /// opened by hand, and the host refuses it rather than guess who read what. A directory not
    /// yet claimed, or claimed by a version that did not keep files private, is tightened here
    /// (every entry loses its group and other bits), once, and its superblock says so from then on.
    /// </summary>
    private Superblock? KeepPrivate(Superblock? superblock)
    {
        var open = PrivateFiles.OpenToOthers(Root);
        if (superblock is { FilesPrivate: true })
        {
            if (open != 0)
            {
                throw new HostStartupException(
                    $"data directory '{Root}' is open to other users (mode {PrivateFiles.ModeOf(Root)}): it holds volume data, and ostor keeps it 0700; run 'chmod -R go-rwx {Root}' and start again");
            }
            return superblock;
        }
        try
        {
            PrivateFiles.Tighten(Root);
            if (superblock is null)
            {
                return null;
            }
            var upgraded = superblock with { FilesPrivate = true };
            DurableFiles.WriteAtomically(SuperblockPath, upgraded.ToBytes());
            return upgraded;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new HostStartupException($"data directory '{Root}' cannot be made private to its owner: {ex.Message}");
        }
    }

    private Superblock? ReadSuperblock()
    {
        if (!File.Exists(SuperblockPath))
        {
            return null;
        }
        try
        {
            return Superblock.Parse(SuperblockPath, File.ReadAllBytes(SuperblockPath));
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            throw new HostStartupException(ex.Message);
        }
    }
}

/// <summary>A silo must not start: the message is the one line the person starting it reads.</summary>
public sealed class HostStartupException(string message) : Exception(message);
