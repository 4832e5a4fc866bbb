using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using OrleansStorage.Segments;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A power cut for a host's segment store, the way LevelDB's and RocksDB's fault-injection
/// environments simulate one: the store's files are real, but this layer sees every fsync the
/// store makes, keeps each file's content as of its last fsync, and which directory entries an
/// fsync of their directory made durable. <see cref="PowerOff"/> stops recording (later fsyncs
/// never happened); <see cref="RestoreAfterPowerLoss"/> then puts every file back to what was
/// durable: its content at its last fsync, empty if it was never fsynced, gone if its directory
/// entry never was. Contents belong to files, not names, as on a real file system: a file fsynced
/// under a temporary name and renamed into place (an atomic publish) is durable under its new name
/// once its directory is fsynced, and a name renamed over keeps its old file until then.
/// </summary>
public sealed partial class PowerLossSimulator : IDiskFaults
{
    private readonly ConcurrentDictionary<string, HostDisk> _hosts = new(StringComparer.Ordinal);

    public bool FailsFsync(string hostId, string path)
    {
        _hosts.GetOrAdd(hostId, _ => new HostDisk()).Synced(path);
        return false;
    }

    /// <summary>What is on disk under <paramref name="volumesRoot"/> now is durable (a host about to start on it).</summary>
    public void Baseline(string hostId, string volumesRoot) => _hosts.GetOrAdd(hostId, _ => new HostDisk()).Baseline(volumesRoot);

    /// <summary>The power goes out: nothing fsynced from now on counts.</summary>
    public void PowerOff(string hostId) => _hosts.GetOrAdd(hostId, _ => new HostDisk()).PowerOff();

    /// <summary>The fsyncs recorded for files whose path ends with <paramref name="suffix"/>, oldest first: for a failure message.</summary>
    public string History(string hostId, string suffix, int last = 16) => _hosts.TryGetValue(hostId, out var host) ? host.History(suffix, last) : "";

    /// <summary>Rolls every file back to what was durable; returns how many files lost something.</summary>
    public int RestoreAfterPowerLoss(string hostId, string volumesRoot) => _hosts[hostId].Restore(volumesRoot);

    private sealed class HostDisk
    {
        private readonly Lock _gate = new();
        // What each file held at its last fsync, and which file each durable name is. A file is
        // its directory and inode: renames within a directory keep both, and a number the file
        // system reuses after a delete elsewhere cannot pass one file's content to another.
        private readonly Dictionary<(string Directory, ulong Inode), byte[]> _content = [];
        private readonly Dictionary<string, ulong> _entries = new(StringComparer.Ordinal);
        private readonly List<string> _history = [];
        private bool _off;

        public string History(string suffix, int last)
        {
            lock (_gate)
            {
                return string.Join(" ", _history.Where(h => h.Contains(suffix, StringComparison.Ordinal) || h.StartsWith('[')).Where(h => !h.StartsWith("[off]", StringComparison.Ordinal) || h.Contains(suffix, StringComparison.Ordinal)).TakeLast(last));
            }
        }

        private static string Short(string path)
        {
            var directory = Path.GetFileName(Path.GetDirectoryName(path)) ?? "";
            return directory[..Math.Min(8, directory.Length)] + "/" + Path.GetFileName(path);
        }

        public void Synced(string path)
        {
            lock (_gate)
            {
                if (_off)
                {
                    _history.Add($"[off]{Short(path)}");
                    return;
                }
                if (Directory.Exists(path))
                {
                    foreach (var entry in Directory.EnumerateFileSystemEntries(path))
                    {
                        _entries[entry] = Inode(entry);
                    }
                }
                else if (File.Exists(path))
                {
                    var content = File.ReadAllBytes(path);
                    _content[FileOf(path, Inode(path))] = content;
                    _history.Add($"{Short(path)}:{content.Length}:{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(content))[..8]}");
                }
            }
        }

        private static (string Directory, ulong Inode) FileOf(string path, ulong inode) => (Path.GetDirectoryName(path) ?? "", inode);

        public void PowerOff()
        {
            lock (_gate)
            {
                _off = true;
            }
        }

        public void Baseline(string volumesRoot)
        {
            lock (_gate)
            {
                _history.Add("[baseline]");
                _off = false;
                _content.Clear();
                _entries.Clear();
                if (!Directory.Exists(volumesRoot))
                {
                    return;
                }
                foreach (var entry in Directory.EnumerateFileSystemEntries(volumesRoot, "*", SearchOption.AllDirectories))
                {
                    _entries[entry] = Inode(entry);
                    if (File.Exists(entry))
                    {
                        _content[FileOf(entry, _entries[entry])] = File.ReadAllBytes(entry);
                    }
                }
            }
        }

        public int Restore(string volumesRoot)
        {
            lock (_gate)
            {
                var lost = 0;
                foreach (var directory in Directory.EnumerateDirectories(volumesRoot).ToList())
                {
                    if (!_entries.ContainsKey(directory))
                    {
                        lost += Directory.EnumerateFiles(directory).Count();
                        Directory.Delete(directory, recursive: true);
                    }
                }
                foreach (var file in Directory.EnumerateFiles(volumesRoot, "*", SearchOption.AllDirectories).ToList())
                {
                    var before = File.ReadAllBytes(file);
                    if (!_entries.TryGetValue(file, out var inode))
                    {
                        File.Delete(file);
                        _history.Add($"[off]{Short(file)}:deleted");
                        lost++;
                        continue;
                    }
                    // The file the durable name points at: another than the one there now if a
                    // rename over the name was never made durable.
                    var durable = _content.GetValueOrDefault(FileOf(file, inode), []);
                    if (!before.AsSpan().SequenceEqual(durable))
                    {
                        File.WriteAllBytes(file, durable);
                        _history.Add($"[off]{Short(file)}:rolled back from {before.Length} to {durable.Length} bytes");
                        lost++;
                    }
                }
                _off = false;
                _history.Add($"[restored {lost}]");
                return lost;
            }
        }
    }

    /// <summary>The inode number of a file or directory (stat's st_ino: the second 8-byte field on 64-bit Linux).</summary>
    private static ulong Inode(string path)
    {
        var stat = new ulong[32];
        if (Stat(path, stat) != 0)
        {
            throw new IOException($"stat of '{path}' failed (errno {Marshal.GetLastPInvokeError()})");
        }
        return stat[1];
    }

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Stat(string path, [Out] ulong[] statBuffer);
}
