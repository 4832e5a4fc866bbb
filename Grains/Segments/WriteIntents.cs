using Microsoft.Win32.SafeHandles;

namespace OrleansStorage.Segments;

/// <summary>
/// A write-intent bitmap, as Linux md keeps one: one byte per segment in <c>{volume}/intents</c>,
/// set and made durable before a segment takes its first write since its last fsync, and cleared
/// (lazily, without an fsync) once a flush has made the segment durable again. After an unclean
/// shutdown, exactly the segments marked here may hold data and a write version that disagree —
/// each reaches the disk on its own — so their versions are not trusted (docs/failures.md).
/// </summary>
internal sealed class WriteIntents(string volumesRoot, Action<string, SafeFileHandle> fsync, Action<string> fsyncDirectory) : IDisposable
{
    public const string FileName = "intents";
    private readonly Lock _gate = new();
    private readonly VolumeFiles<VolumeIntents> _volumes = new(volumesRoot, FileName, fsyncDirectory, opening =>
    {
        // A mark is only durable if the file that holds it is: its directory entry first.
        if (opening.NewFile)
        {
            fsyncDirectory(System.IO.Path.GetDirectoryName(opening.Path)!);
        }
        return new VolumeIntents(opening.Path, opening.Handle, opening.Contents);
    });

    /// <summary>
    /// Marks the segment; the task completes once the mark is durable. Free when it already is;
    /// otherwise one byte written and the file fsynced (marks set meanwhile share the fsync).
    /// </summary>
    public Task Mark(Guid volumeId, long segmentIndex)
    {
        VolumeIntents volume;
        lock (_gate)
        {
            volume = Open(volumeId, create: true)!;
            if (volume.IsMarked(segmentIndex))
            {
                return volume.Durable; // marked; durable once the fsync that covers it is done
            }
            volume.Set(segmentIndex, true);
            return volume.Durable = SyncAfter(volume, volume.Durable);
        }
    }

    /// <summary>The flush made these segments durable: unmark them. Not fsynced: a lost clear only costs a needless repair.</summary>
    public void Clear(Guid volumeId, IEnumerable<long> segmentIndexes)
    {
        lock (_gate)
        {
            if (Open(volumeId, create: false) is { } volume)
            {
                foreach (var index in segmentIndexes)
                {
                    volume.Set(index, false);
                }
            }
        }
    }

    /// <summary>Every marked segment of the volume.</summary>
    public IReadOnlyList<long> Marked(Guid volumeId)
    {
        lock (_gate)
        {
            return Open(volumeId, create: false)?.MarkedSegments() ?? [];
        }
    }

    public void Forget(Guid volumeId)
    {
        lock (_gate)
        {
            _volumes.Forget(volumeId);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _volumes.Dispose();
        }
    }

    /// <summary>One fsync after the previous one: marks set meanwhile ride along with it.</summary>
    private async Task SyncAfter(VolumeIntents volume, Task previous)
    {
        await previous.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ForceYielding);
        fsync(volume.Path, volume.Handle);
    }

    private VolumeIntents? Open(Guid volumeId, bool create) => _volumes.Get(volumeId, create);

    private sealed class VolumeIntents(string path, SafeFileHandle handle, byte[] marks) : IVolumeFile
    {
        private byte[] _marks = marks;

        public string Path { get; } = path;

        public SafeFileHandle Handle { get; } = handle;

        /// <summary>Completes when every mark set so far is durable.</summary>
        public Task Durable { get; set; } = Task.CompletedTask;

        public bool IsMarked(long segmentIndex) => segmentIndex < _marks.Length && _marks[segmentIndex] != 0;

        public void Set(long segmentIndex, bool marked)
        {
            if (segmentIndex >= _marks.Length)
            {
                if (!marked)
                {
                    return;
                }
                Array.Resize(ref _marks, (int)Math.Max(segmentIndex + 1, _marks.Length * 2L));
            }
            if ((_marks[segmentIndex] != 0) == marked)
            {
                return;
            }
            _marks[segmentIndex] = marked ? (byte)1 : (byte)0;
            RandomAccess.Write(Handle, _marks.AsSpan((int)segmentIndex, 1), segmentIndex);
        }

        public List<long> MarkedSegments()
        {
            var marked = new List<long>();
            for (var i = 0; i < _marks.Length; i++)
            {
                if (_marks[i] != 0)
                {
                    marked.Add(i);
                }
            }
            return marked;
        }
    }
}
