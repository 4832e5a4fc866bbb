using System.Collections.Concurrent;
using OrleansStorage.Segments;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A power cut for a host's segment store, the way LevelDB's and RocksDB's fault-injection
/// environments simulate one: the store's files are real, but this layer sees every fsync the
/// store makes, keeps each file's content as of its last fsync, and which directory entries an
/// fsync of their directory made durable. <see cref="PowerOff"/> stops recording (later fsyncs
/// never happened); <see cref="RestoreAfterPowerLoss"/> then puts every file back to what was
/// durable: its content at its last fsync, empty if it was never fsynced, gone if its directory
/// entry never was.
/// </summary>
public sealed class PowerLossSimulator : IDiskFaults
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
        private readonly Dictionary<string, byte[]> _content = new(StringComparer.Ordinal);
        private readonly HashSet<string> _entries = new(StringComparer.Ordinal);
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
                        _entries.Add(entry);
                    }
                }
                else if (File.Exists(path))
                {
                    _content[path] = File.ReadAllBytes(path);
                    _history.Add($"{Short(path)}:{_content[path].Length}:{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(_content[path]))[..8]}");
                }
            }
        }

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
                    _entries.Add(entry);
                    if (File.Exists(entry))
                    {
                        _content[entry] = File.ReadAllBytes(entry);
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
                    if (!_entries.Contains(directory))
                    {
                        lost += Directory.EnumerateFiles(directory).Count();
                        Directory.Delete(directory, recursive: true);
                    }
                }
                foreach (var file in Directory.EnumerateFiles(volumesRoot, "*", SearchOption.AllDirectories).ToList())
                {
                    var before = File.ReadAllBytes(file);
                    if (!_entries.Contains(file))
                    {
                        File.Delete(file);
                        _history.Add($"[off]{Short(file)}:deleted");
                        lost++;
                        continue;
                    }
                    var durable = _content.GetValueOrDefault(file, []);
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
}
