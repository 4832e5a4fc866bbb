using Microsoft.Win32.SafeHandles;

namespace OrleansStorage.Segments;

/// <summary>One small file a volume keeps beside its segments (write versions, write intents), loaded whole and kept open.</summary>
internal interface IVolumeFile
{
    SafeFileHandle Handle { get; }
}

/// <summary>
/// The open <typeparamref name="TFile"/> of every volume that has one: opened (and read whole) on
/// first use, closed when the volume is forgotten. Not thread-safe: its owner calls it under its own lock.
/// </summary>
/// <param name="fsyncDirectory">
/// Makes a directory's entries durable. A volume's directory created here is made durable in the
/// volumes root at once: whichever of the volume's files comes first (a replica's first change
/// can be a version alone), what is later made durable inside it must not vanish with its directory.
/// </param>
/// <param name="load">
/// Builds the file from its path, handle and contents, told whether the file was just created (so
/// it can make its entry durable when it needs to).
/// </param>
internal sealed class VolumeFiles<TFile>(string volumesRoot, string fileName, Action<string> fsyncDirectory, Func<VolumeFileOpening, TFile> load) : IDisposable
    where TFile : class, IVolumeFile
{
    private readonly Dictionary<Guid, TFile> _open = [];

    /// <summary>The volume's file; null when it has none and <paramref name="create"/> is false.</summary>
    public TFile? Get(Guid volumeId, bool create)
    {
        if (_open.TryGetValue(volumeId, out var file))
        {
            return file;
        }
        var directory = Path.Combine(volumesRoot, volumeId.ToString("N"));
        var path = Path.Combine(directory, fileName);
        var newFile = !File.Exists(path);
        if (!create && newFile)
        {
            return null;
        }
        if (!Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory);
            fsyncDirectory(volumesRoot);
        }
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        var contents = new byte[RandomAccess.GetLength(handle)];
        var read = 0;
        while (read < contents.Length)
        {
            var n = RandomAccess.Read(handle, contents.AsSpan(read), read);
            if (n == 0)
            {
                break; // the file shrank meanwhile: the rest was never written
            }
            read += n;
        }
        file = load(new VolumeFileOpening(path, handle, contents.AsSpan(0, read).ToArray(), newFile));
        _open[volumeId] = file;
        return file;
    }

    public void Forget(Guid volumeId)
    {
        if (_open.Remove(volumeId, out var file))
        {
            file.Handle.Dispose();
        }
    }

    public void Dispose()
    {
        foreach (var file in _open.Values)
        {
            file.Handle.Dispose();
        }
        _open.Clear();
    }
}

internal readonly record struct VolumeFileOpening(string Path, SafeFileHandle Handle, byte[] Contents, bool NewFile);
