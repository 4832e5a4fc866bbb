using System.Security.Cryptography;
using System.Text;

namespace OrleansStorage.Files;

/// <summary>
/// What a power cut would leave of a directory tree, kept on disk beside it: told of every fsync
/// before it is made, it keeps each file's content as of its last fsync and each directory's
/// entries as of its last fsync, the way LevelDB's and RocksDB's fault-injection environments and
/// Jepsen's LazyFS model a power loss. <see cref="Restore"/> then puts the tree back to that: a
/// file holds what it held at its last fsync (nothing, if it never was), a name whose entry no
/// fsync of its directory made durable is gone, and one whose removal was never made durable is
/// back. Contents and entries belong to files and directories (an inode and its birth time,
/// <see cref="DurableFiles.Identity"/>), not names, as on a real file system: a file fsynced under a
/// temporary name, or in another directory, and renamed into place is durable under its new name
/// once its directory is fsynced; a name renamed over keeps its old file until then; a new file
/// that got a deleted file's inode number is a new file; a directory made again at the same path
/// starts empty.
/// <para>
/// The image lives in files, so another process can restore it after this one was killed (a host
/// process killed with <c>kill -9</c>, then rolled back: a power cut of that host, with the page
/// cache lost). A test switches it on; production never does. Its files are written whole and
/// renamed into place, so a kill mid-record leaves the previous record.
/// </para>
/// </summary>
public sealed class DurableImage
{
    /// <summary>While a file of this name is in the image directory, every fsync fails (a dying disk).</summary>
    public const string FailFsyncFileName = "fail-fsync";

    /// <summary>
    /// Left in the image directory by a test that killed the process recording it: the next start
    /// on that tree restores it first (<see cref="Restore"/>), as if the power had been cut.
    /// </summary>
    public const string PowerCutFileName = "power-cut";

    private const string ContentFolder = "content";
    private const string EntriesFolder = "entries";
    private const string BaselineFileName = "baseline";

    private readonly string _image;
    private readonly bool _keepHistory;
    private readonly Lock _gate = new();
    private readonly List<string> _history = [];
    private bool _off;

    /// <param name="imageDirectory">Where the image is kept: never inside the tree it records.</param>
    /// <param name="keepHistory">Whether to remember every recorded fsync (with a hash of the content) for failure messages.</param>
    public DurableImage(string imageDirectory, bool keepHistory = false)
    {
        _image = Path.GetFullPath(imageDirectory);
        _keepHistory = keepHistory;
        Directory.CreateDirectory(Path.Combine(_image, ContentFolder));
        Directory.CreateDirectory(Path.Combine(_image, EntriesFolder));
    }

    /// <summary>Whether fsyncs are to fail now (<see cref="FailFsyncFileName"/> is present).</summary>
    public bool FailsFsync => File.Exists(Path.Combine(_image, FailFsyncFileName));

    /// <summary>
    /// Whether a baseline was completed in this image. A process killed and started again keeps
    /// recording into the same image: what only its page cache held is still not durable.
    /// </summary>
    public bool HasBaseline => File.Exists(Path.Combine(_image, BaselineFileName));

    /// <summary>Whatever is under <paramref name="root"/> now is durable (a host about to start on it); the image forgets everything before.</summary>
    public void Baseline(string root)
    {
        lock (_gate)
        {
            _off = false;
            Note("[baseline]");
            File.Delete(Path.Combine(_image, BaselineFileName));
            foreach (var folder in new[] { ContentFolder, EntriesFolder })
            {
                var path = Path.Combine(_image, folder);
                Directory.Delete(path, recursive: true);
                Directory.CreateDirectory(path);
            }
            if (Directory.Exists(root) && !DurableFiles.Identity(root).Contains('-', StringComparison.Ordinal))
            {
                // Without birth times a file that took a deleted file's inode number would inherit its content.
                throw new InvalidOperationException($"the file system of '{root}' keeps no birth times (statx STATX_BTIME): a durable image cannot tell files apart there");
            }
            if (Directory.Exists(root))
            {
                foreach (var directory in Directory.EnumerateDirectories(root, "*", SearchOption.AllDirectories).Prepend(root))
                {
                    RecordEntries(Path.GetFullPath(directory));
                    foreach (var file in Directory.EnumerateFiles(directory))
                    {
                        RecordContent(Path.GetFullPath(file));
                    }
                }
            }
            // Last: a process killed in the middle of a baseline leaves none, and the next start takes one again.
            File.WriteAllText(Path.Combine(_image, BaselineFileName), "");
        }
    }

    /// <summary>An fsync of <paramref name="path"/> (a file or a directory) is about to be made: what it holds now is durable.</summary>
    public void Synced(string path)
    {
        path = Path.GetFullPath(path);
        lock (_gate)
        {
            if (_off)
            {
                Note($"[off]{Short(path)}");
                return;
            }
            try
            {
                if (Directory.Exists(path))
                {
                    RecordEntries(path);
                }
                else if (File.Exists(path))
                {
                    RecordContent(path);
                }
            }
            catch (IOException) when (!File.Exists(path) && !Directory.Exists(path))
            {
                // Removed while being recorded: what a power cut keeps of it is decided by its directory's entries.
            }
        }
    }

    /// <summary>The power goes out: no fsync from now on counts.</summary>
    public void PowerOff()
    {
        lock (_gate)
        {
            _off = true;
        }
    }

    /// <summary>The recorded fsyncs of paths that contain <paramref name="suffix"/>, oldest first, with the baselines and restores: for a failure message.</summary>
    public string History(string suffix, int last = 16)
    {
        lock (_gate)
        {
            return string.Join(" ", _history
                .Where(h => h.Contains(suffix, StringComparison.Ordinal) || (h.StartsWith('[') && !h.StartsWith("[off]", StringComparison.Ordinal)))
                .TakeLast(last));
        }
    }

    /// <summary>Puts the tree under <paramref name="root"/> back to what was durable; returns how many files lost, regained or changed something.</summary>
    public int Restore(string root)
    {
        lock (_gate)
        {
            root = Path.GetFullPath(root);
            var changed = RestoreDirectory(root, DurableFiles.Identity(root));
            _off = false;
            Note($"[restored {changed}]");
            return changed;
        }
    }

    /// <summary>Makes <paramref name="directory"/> hold what the durable directory <paramref name="durableId"/> held.</summary>
    private int RestoreDirectory(string directory, string durableId)
    {
        var durable = ReadEntries(durableId);
        var changed = 0;
        foreach (var entry in Directory.EnumerateFileSystemEntries(directory).ToList())
        {
            var name = Path.GetFileName(entry);
            var isDirectory = Directory.Exists(entry);
            if (durable.TryGetValue(name, out var kept) && kept.IsDirectory == isDirectory
                && (!isDirectory || DurableFiles.Identity(entry) == kept.Id))
            {
                durable.Remove(name);
                changed += isDirectory ? RestoreDirectory(entry, kept.Id) : RestoreFile(entry, kept.Id);
                continue;
            }
            // Its entry never reached the disk (or the durable one is another file or directory:
            // restored below, in its place).
            changed += isDirectory ? Directory.EnumerateFiles(entry, "*", SearchOption.AllDirectories).Count() + 1 : 1;
            if (isDirectory)
            {
                Directory.Delete(entry, recursive: true);
            }
            else
            {
                File.Delete(entry);
            }
            Note($"[off]{Short(entry)}:deleted");
        }
        foreach (var (name, kept) in durable)
        {
            // Gone now, but durable: removed (or replaced) without the change reaching the disk.
            var path = Path.Combine(directory, name);
            if (kept.IsDirectory)
            {
                Directory.CreateDirectory(path);
                changed += RestoreDirectory(path, kept.Id) + 1;
            }
            else
            {
                File.WriteAllBytes(path, ReadContent(kept.Id));
                changed++;
            }
            Note($"[off]{Short(path)}:back");
        }
        return changed;
    }

    private int RestoreFile(string file, string durableId)
    {
        // The file the durable name points at: another than the one there now if a rename over
        // the name was never made durable.
        var durable = ReadContent(durableId);
        var now = File.ReadAllBytes(file);
        if (now.AsSpan().SequenceEqual(durable))
        {
            return 0;
        }
        File.WriteAllBytes(file, durable);
        Note($"[off]{Short(file)}:rolled back from {now.Length} to {durable.Length} bytes");
        return 1;
    }

    private void RecordContent(string file)
    {
        var target = ContentPath(DurableFiles.Identity(file));
        File.Copy(file, target + ".tmp", overwrite: true);
        File.Move(target + ".tmp", target, overwrite: true);
        if (_keepHistory)
        {
            var content = File.ReadAllBytes(target);
            Note($"{Short(file)}:{content.Length}:{Convert.ToHexString(SHA256.HashData(content))[..8]}");
        }
    }

    private void RecordEntries(string directory)
    {
        var lines = new StringBuilder();
        foreach (var entry in Directory.EnumerateFileSystemEntries(directory))
        {
            try
            {
                var kind = Directory.Exists(entry) ? 'd' : 'f';
                lines.Append(DurableFiles.Identity(entry)).Append('\t').Append(kind).Append('\t').Append(Path.GetFileName(entry)).Append('\n');
            }
            catch (IOException) when (!Path.Exists(entry))
            {
                // Removed while listed: not among the entries.
            }
        }
        var target = EntriesPath(DurableFiles.Identity(directory));
        File.WriteAllText(target + ".tmp", lines.ToString());
        File.Move(target + ".tmp", target, overwrite: true);
    }

    /// <summary>A directory's durable entries by name; none if no fsync of it (nor a baseline) was recorded.</summary>
    private Dictionary<string, (string Id, bool IsDirectory)> ReadEntries(string directoryId)
    {
        var entries = new Dictionary<string, (string, bool)>(StringComparer.Ordinal);
        var path = EntriesPath(directoryId);
        if (!File.Exists(path))
        {
            return entries;
        }
        foreach (var line in File.ReadAllLines(path))
        {
            var parts = line.Split('\t', 3);
            if (parts.Length == 3)
            {
                entries[parts[2]] = (parts[0], parts[1] == "d");
            }
        }
        return entries;
    }

    private byte[] ReadContent(string fileId)
    {
        var path = ContentPath(fileId);
        return File.Exists(path) ? File.ReadAllBytes(path) : [];
    }

    private string ContentPath(string fileId) => Path.Combine(_image, ContentFolder, fileId);

    private string EntriesPath(string directoryId) => Path.Combine(_image, EntriesFolder, directoryId);

    private void Note(string line)
    {
        if (_keepHistory)
        {
            _history.Add(line);
        }
    }

    private static string Short(string path)
    {
        var directory = Path.GetFileName(Path.GetDirectoryName(path)) ?? "";
        return directory[..Math.Min(8, directory.Length)] + "/" + Path.GetFileName(path);
    }
}
