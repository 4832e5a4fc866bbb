using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OrleansStorage.Segments;

/// <summary>
/// The write version of every segment a host holds: one 8-byte slot per segment number in
/// <c>{volume}/versions</c>, cached in memory. The primary gives each write a version above the
/// segment's last one and at least <c>epoch &lt;&lt; 32</c>, so two primaries of different epochs
/// never hand out the same version; replicas keep the highest version they applied. Two replicas
/// with equal versions hold the same segment; a resync copies only segments whose versions differ.
/// A slot is written through on every change (it survives a killed process with the page cache)
/// and fsynced with the volume's data on flush.
/// </summary>
internal sealed class SegmentVersions(string volumesRoot, Action<string> fsyncDirectory) : IDisposable
{
    public const string FileName = "versions";
    private readonly Lock _gate = new();
    private readonly VolumeFiles<VolumeVersions> _volumes = new(volumesRoot, FileName, fsyncDirectory, opening => new VolumeVersions(opening.Handle, Slots(opening.Contents)));

    /// <summary>
    /// The version of a suspect segment after an unclean shutdown: its data may have lost writes
    /// its last version claims. It equals no version a primary hands out, so a resync always copies
    /// the segment; forwarded writes do not raise it (the rest of the segment is still unknown);
    /// only an installed copy, or the primary's own repair, replaces it.
    /// </summary>
    public const long Unknown = -1;

    /// <summary>A version's epoch is its high bits: version &gt;&gt; EpochShift.</summary>
    public const int EpochShift = 32;

    private static long FirstVersionOf(long epoch) => epoch << EpochShift;

    /// <summary>
    /// The last version of an epoch, never handed out to a write: a primary gives it to a segment
    /// whose contents it must impose on its replicas, and no replica can hold it already.
    /// </summary>
    public static long RepairVersionOf(long epoch) => FirstVersionOf(epoch + 1) - 1;

    public long Get(Guid volumeId, long segmentIndex)
    {
        lock (_gate)
        {
            return Open(volumeId, create: false)?.Get(segmentIndex) ?? 0;
        }
    }

    /// <summary>The highest version of any segment of the volume (0 when none was written).</summary>
    public long Highest(Guid volumeId)
    {
        lock (_gate)
        {
            return Open(volumeId, create: false)?.Highest() ?? 0;
        }
    }

    /// <summary>Assigns the version of a new write by the primary at <paramref name="epoch"/>.</summary>
    public long Next(Guid volumeId, long segmentIndex, long epoch)
    {
        lock (_gate)
        {
            var volume = Open(volumeId, create: true)!;
            var next = Math.Max(volume.Get(segmentIndex) + 1, FirstVersionOf(epoch));
            if (next >= RepairVersionOf(epoch))
            {
                // The counter would reach the repair version, or run into the next epoch's versions,
                // which another primary may hand out.
                throw new Errors.StorageException($"segment {segmentIndex} of volume {volumeId} has used up the write versions of epoch {epoch}; the write is refused until the map moves on");
            }
            volume.Set(segmentIndex, next);
            return next;
        }
    }

    /// <summary>A replica applied a forwarded write: keep the highest version seen (an unknown version stays unknown).</summary>
    public void Raise(Guid volumeId, long segmentIndex, long version)
    {
        lock (_gate)
        {
            var volume = Open(volumeId, create: true)!;
            var current = volume.Get(segmentIndex);
            if (current != Unknown && version > current)
            {
                volume.Set(segmentIndex, version);
            }
        }
    }

    /// <summary>A copied segment: its version is the source's, even if lower than ours (ours was never acknowledged).</summary>
    public void Set(Guid volumeId, long segmentIndex, long version)
    {
        lock (_gate)
        {
            Open(volumeId, create: true)!.Set(segmentIndex, version);
        }
    }

    public void Flush(Guid volumeId)
    {
        SafeFileHandle? handle;
        lock (_gate)
        {
            handle = Open(volumeId, create: false)?.Handle;
        }
        if (handle is not null)
        {
            RandomAccess.FlushToDisk(handle);
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

    private VolumeVersions? Open(Guid volumeId, bool create) => _volumes.Get(volumeId, create);

    /// <summary>The slots are the file's bytes as longs in this machine's byte order (a torn last slot reads as never written).</summary>
    private static long[] Slots(byte[] contents)
    {
        var slots = new long[contents.Length / sizeof(long)];
        contents.AsSpan(0, slots.Length * sizeof(long)).CopyTo(MemoryMarshal.AsBytes(slots.AsSpan()));
        return slots;
    }

    private sealed class VolumeVersions(SafeFileHandle handle, long[] slots) : IVolumeFile
    {
        private long[] _slots = slots;

        public SafeFileHandle Handle { get; } = handle;

        public long Get(long segmentIndex) => segmentIndex < _slots.Length ? _slots[segmentIndex] : 0;

        public long Highest() => _slots.Length == 0 ? 0 : _slots.Max();

        public void Set(long segmentIndex, long version)
        {
            if (segmentIndex >= _slots.Length)
            {
                Array.Resize(ref _slots, (int)Math.Max(segmentIndex + 1, _slots.Length * 2L));
            }
            _slots[segmentIndex] = version;
            RandomAccess.Write(Handle, MemoryMarshal.AsBytes(_slots.AsSpan((int)segmentIndex, 1)), segmentIndex * sizeof(long));
        }
    }
}
