using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Errors;
using OrleansStorage.Files;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// A host's segment files: one sparse file per (volume, segment), created on first write, under
/// <c>{root}/volumes/{volume-guid}/{segment-number}.seg</c>. Paths are built from GUIDs and numbers
/// only, never from user strings. Never-written bytes (holes, or past the end of the file, or
/// no file at all) read as zeros. Handles stay open; I/O goes through <see cref="RandomAccess"/>.
/// </summary>
public sealed partial class SegmentStore : IDisposable
{
    /// <summary>Open segment files kept per host; a large volume has far more segments than a process may open.</summary>
    public const int DefaultMaxOpenSegments = 4096;

    private const string SegmentExtension = ".seg";
    private readonly string _volumesRoot;
    private readonly int _maxOpenSegments;
    private readonly Lock _gate = new();

    // Open handles, leased by every I/O; idle ones are closed least recently used first.
    private readonly Dictionary<SegmentAddress, OpenSegment> _open = [];
    private long _useClock;

    // Segments written since their last fsync, with the generation of their latest write. Flush
    // works from this, not from the open handles, so evicting a handle never loses durability.
    private readonly Dictionary<SegmentAddress, long> _dirty = [];
    private long _writeGeneration;

    private readonly SegmentVersions _versions;
    private readonly WriteIntents _intents;

    // Segments a flush made clean, with when (Environment.TickCount64): their write intents are
    // cleared only once they stayed clean for a while (DefaultIntentClearDelay), as md clears its bitmap, so a
    // segment written again soon after a flush (a database's commits) is not marked and fsynced
    // anew each time. A mark kept longer costs only a needless repair after a crash.
    private readonly Dictionary<SegmentAddress, long> _cleanSince = [];
    private readonly long _intentClearDelayMilliseconds;

    /// <summary>How long a flushed segment keeps its write intent: md's bitmap daemon waits 5 s too.</summary>
    public static readonly TimeSpan DefaultIntentClearDelay = TimeSpan.FromSeconds(5);

    /// <summary>Written by a clean shutdown, after every write was made durable; removed at open.</summary>
    public const string CleanShutdownFileName = "clean-shutdown";

    // Segment files created since their volume directory was last fsynced: their directory
    // entries are not durable yet, so a durable write to one of them fsyncs the directory too.
    private readonly Dictionary<Guid, HashSet<long>> _newFiles = [];

    // Volumes flushed since this store opened. The set of written-but-unsynced segments is kept
    // in memory only, so the first flush of a volume after a restart syncs all of its segments:
    // writes acknowledged before the restart may still sit in the page cache.
    private readonly HashSet<Guid> _flushedSinceOpen = [];

    // Set by the first failed fsync. The kernel may have dropped the pages it could not write and
    // marked them clean, so a later fsync would report success over lost data ("fsyncgate"): from
    // then on the store refuses every request (fail-stop).
    private string? _failure;
    // Sees the path of every fsync about to be made and decides whether it fails: disk failures
    // on purpose, for tests. Production never fails one.
    private readonly Func<string, bool> _failsFsync;

    /// <summary>Raised once, when the disk has failed (see <see cref="Failure"/>).</summary>
    public event Action<string>? Failed;

    public SegmentStore(string dataDirectory, int maxOpenSegments = DefaultMaxOpenSegments, Func<string, bool>? failsFsync = null, TimeSpan? intentClearDelay = null)
    {
        _failsFsync = failsFsync ?? (_ => false);
        _intentClearDelayMilliseconds = (long)(intentClearDelay ?? DefaultIntentClearDelay).TotalMilliseconds;
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxOpenSegments, 1);
        _volumesRoot = Path.Combine(Path.GetFullPath(dataDirectory), "volumes");
        _maxOpenSegments = maxOpenSegments;
        Directory.CreateDirectory(_volumesRoot);
        _versions = new SegmentVersions(_volumesRoot, SyncDirectory);
        _intents = new WriteIntents(_volumesRoot, SyncIntents, SyncDirectory);
        ChecksumEverySegmentOnce();
        RemoveUnpublishedCopies();
        SuspectSegments = OpenAfterShutdown();
    }

    public int OpenSegmentCount
    {
        get
        {
            lock (_gate)
            {
                return _open.Count;
            }
        }
    }

    public int DirtySegmentCount(Guid volumeId)
    {
        lock (_gate)
        {
            return _dirty.Keys.Count(k => k.VolumeId == volumeId);
        }
    }

    public string VolumesRoot => _volumesRoot;

    /// <summary>Why the disk is considered failed, or null while it is healthy.</summary>
    public string? Failure
    {
        get
        {
            lock (_gate)
            {
                return _failure;
            }
        }
    }

    public string SegmentPath(SegmentAddress segment) =>
        Path.Combine(VolumeDirectory(segment.VolumeId), segment.SegmentIndex.ToString("D10", CultureInfo.InvariantCulture) + SegmentExtension);

    private string VolumeDirectory(Guid volumeId) => Path.Combine(_volumesRoot, volumeId.ToString("N"));

    /// <summary>
    /// Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>; holes read as
    /// zeros. Every block the range touches is checked against its checksum first: a mismatch
    /// throws <see cref="CorruptBlocksException"/> and returns nothing.
    /// </summary>
    public async ValueTask ReadAsync(SegmentAddress segment, int segmentSize, int offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        try
        {
            await ReadCoreAsync(segment, segmentSize, offset, destination, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"read of segment {segment.SegmentIndex} of volume {segment.VolumeId} failed: {ex.Message}");
        }
    }

    private async ValueTask ReadCoreAsync(SegmentAddress segment, int segmentSize, int offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        CheckRange(segmentSize, offset, destination.Length);
        ThrowIfFailed();
        using var lease = Acquire(segment, create: false);
        if (lease.Handle is null || destination.IsEmpty)
        {
            destination.Span.Clear(); // never written here: zeros, with no checksum to disagree
            return;
        }
        await ReadVerifiedAsync(lease, segment, segmentSize, offset, destination, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="offset"/> with the checksums of the blocks
    /// it touches. A block the write covers only in part is read first and must match its
    /// checksum (else <see cref="CorruptBlocksException"/>, nothing written), unless
    /// <paramref name="verifyPartialBlocks"/> is false: a replica whose segment is to be recopied anyway.
    /// </summary>
    public async ValueTask WriteAsync(SegmentAddress segment, int segmentSize, int offset, ReadOnlyMemory<byte> data, bool durable, CancellationToken cancellationToken = default, bool verifyPartialBlocks = true)
    {
        try
        {
            await WriteCoreAsync(segment, segmentSize, offset, data, durable, cancellationToken, verifyPartialBlocks).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"write to segment {segment.SegmentIndex} of volume {segment.VolumeId} failed: {ex.Message}");
        }
    }

    private async ValueTask WriteCoreAsync(SegmentAddress segment, int segmentSize, int offset, ReadOnlyMemory<byte> data, bool durable, CancellationToken cancellationToken = default, bool verifyPartialBlocks = true)
    {
        CheckRange(segmentSize, offset, data.Length);
        ThrowIfFailed();
        if (data.IsEmpty)
        {
            return;
        }
        using var writing = await BeginDataWriteAsync(segment).ConfigureAwait(false);
        if (BeforeDataWrite is { } hold)
        {
            await hold(segment).ConfigureAwait(false);
        }
        using var lease = Acquire(segment, create: true);
        var (firstBlock, checksums) = await ChecksumsAfterWriteAsync(lease, segment, segmentSize, offset, data, data.Length, verifyPartialBlocks, cancellationToken).ConfigureAwait(false);
        await RandomAccess.WriteAsync(lease.Handle!, data, offset, cancellationToken).ConfigureAwait(false);
        BlockChecksums.Write(lease.Checksums!, firstBlock, checksums);
        if (durable)
        {
            await FsyncAsync(lease, segment).ConfigureAwait(false);
            // A file created since its directory was last fsynced (by this write or an earlier,
            // non-durable one) has no durable directory entry yet: the data would be lost with it.
            // Before the volume's first flush since this store opened, that includes files an
            // earlier process made and was killed before it fsynced their directory.
            bool entryIsNew;
            lock (_gate)
            {
                entryIsNew = (_newFiles.TryGetValue(segment.VolumeId, out var created) && created.Contains(segment.SegmentIndex))
                    || !_flushedSinceOpen.Contains(segment.VolumeId);
            }
            if (entryIsNew)
            {
                SyncVolumeDirectory(segment.VolumeId);
            }
        }
    }

    /// <summary>Punches a hole so the range reads as zeros and frees its blocks; partial blocks are checked as a write's are.</summary>
    public async ValueTask TrimAsync(SegmentAddress segment, int segmentSize, int offset, int length, CancellationToken cancellationToken = default, bool verifyPartialBlocks = true)
    {
        try
        {
            await TrimCoreAsync(segment, segmentSize, offset, length, cancellationToken, verifyPartialBlocks).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"trim of segment {segment.SegmentIndex} of volume {segment.VolumeId} failed: {ex.Message}");
        }
    }

    private async ValueTask TrimCoreAsync(SegmentAddress segment, int segmentSize, int offset, int length, CancellationToken cancellationToken = default, bool verifyPartialBlocks = true)
    {
        CheckRange(segmentSize, offset, length);
        ThrowIfFailed();
        using var lease = Acquire(segment, create: false);
        var handle = lease.Handle;
        if (handle is null || length == 0)
        {
            return;
        }
        var fileLength = RandomAccess.GetLength(handle);
        if (offset >= fileLength)
        {
            return; // nothing was ever written there
        }
        using var writing = await BeginDataWriteAsync(segment).ConfigureAwait(false);
        var (firstBlock, checksums) = await ChecksumsAfterWriteAsync(lease, segment, segmentSize, offset, null, length, verifyPartialBlocks, cancellationToken).ConfigureAwait(false);
        if (!PunchHole(handle, offset, length))
        {
            // File systems without hole punching: write zeros instead (same contents, no space freed).
            var end = Math.Min(fileLength, (long)offset + length);
            var zeros = new byte[Math.Min(end - offset, 1 << 20)];
            for (long at = offset; at < end; at += zeros.Length)
            {
                var count = (int)Math.Min(zeros.Length, end - at);
                await RandomAccess.WriteAsync(handle, zeros.AsMemory(0, count), at, cancellationToken).ConfigureAwait(false);
            }
        }
        BlockChecksums.Write(lease.Checksums!, firstBlock, checksums);
    }

    /// <summary>
    /// The ranges of [offset, offset+length) that hold data, found with lseek(SEEK_DATA/SEEK_HOLE);
    /// holes and the space past the end of the file are left out. Where the file system cannot
    /// tell, the whole written part of the range counts as data (always a safe answer).
    /// </summary>
    public DataExtent[] DataExtents(SegmentAddress segment, int segmentSize, int offset, int length)
    {
        CheckRange(segmentSize, offset, length);
        using var lease = Acquire(segment, create: false);
        var handle = lease.Handle;
        if (handle is null || length == 0)
        {
            return [];
        }
        var end = Math.Min((long)offset + length, RandomAccess.GetLength(handle));
        if (end <= offset)
        {
            return [];
        }
        if (!OperatingSystem.IsLinux())
        {
            return [new DataExtent(offset, (int)(end - offset))];
        }
        const int SeekData = 3;
        const int SeekHole = 4;
        var extents = new List<DataExtent>();
        long position = offset;
        while (position < end)
        {
            var dataStart = Libc.Lseek(handle, position, SeekData);
            if (dataStart < 0)
            {
                if (Marshal.GetLastPInvokeError() == 6 /* ENXIO: no data past position */)
                {
                    break;
                }
                return [new DataExtent(offset, (int)(end - offset))];
            }
            if (dataStart >= end)
            {
                break;
            }
            var holeStart = Libc.Lseek(handle, dataStart, SeekHole);
            var dataEnd = holeStart < 0 ? end : Math.Min(holeStart, end);
            extents.Add(new DataExtent((int)dataStart, (int)(dataEnd - dataStart)));
            position = dataEnd;
        }
        return [.. extents];
    }

    /// <summary>
    /// Makes every completed write to the volume's segments durable (fsync), with their write
    /// versions and directory entries. The first flush of a volume since the store opened syncs
    /// every segment of it, since what was written before a restart is not known.
    /// </summary>
    public async Task FlushVolumeAsync(Guid volumeId)
    {
        ThrowIfFailed();
        List<KeyValuePair<SegmentAddress, long>> written;
        bool everything;
        lock (_gate)
        {
            everything = !_flushedSinceOpen.Contains(volumeId);
            written = _dirty.Where(kv => kv.Key.VolumeId == volumeId).ToList();
        }
        if (everything)
        {
            var known = written.Select(kv => kv.Key).ToHashSet();
            written.AddRange(ListSegments(volumeId)
                .Select(index => new SegmentAddress(volumeId, index))
                .Where(segment => !known.Contains(segment))
                .Select(segment => new KeyValuePair<SegmentAddress, long>(segment, -1)));
        }
        bool newEntries;
        lock (_gate)
        {
            // Files made before this store opened may have entries still in the page cache only.
            newEntries = everything || _newFiles.ContainsKey(volumeId);
        }
        // Every fsync at once: none depends on another, since every segment synced here keeps its
        // write intent until all of them are done (a crash in between repairs it), and the disk
        // can commit them together.
        var syncs = written.Select(async kv =>
        {
            using (var lease = Acquire(kv.Key, create: false))
            {
                if (lease.Handle is not null)
                {
                    await FsyncAsync(lease, kv.Key).ConfigureAwait(false);
                }
            }
        }).ToList();
        syncs.Add(Task.Run(() => SyncVersions(volumeId)));
        if (newEntries && Directory.Exists(VolumeDirectory(volumeId)))
        {
            syncs.Add(Task.Run(() => SyncVolumeDirectory(volumeId)));
        }
        await Task.WhenAll(syncs).ConfigureAwait(false);
        lock (_gate)
        {
            // Data and versions of these segments are durable now; a write that ended after our
            // snapshot, or is still in flight, has a newer generation or is counted in flight: the
            // segment stays dirty and keeps its intent.
            var now = Environment.TickCount64;
            foreach (var (segment, generation) in written)
            {
                if (SyncedEverything(segment, generation))
                {
                    _dirty.Remove(segment);
                    _cleanSince.TryAdd(segment, now);
                }
            }
            var settled = _cleanSince
                .Where(kv => kv.Key.VolumeId == volumeId && now - kv.Value >= _intentClearDelayMilliseconds && !_keptSuspect.Contains(kv.Key))
                .Select(kv => kv.Key)
                .ToList();
            foreach (var segment in settled)
            {
                _cleanSince.Remove(segment);
            }
            _intents.Clear(volumeId, settled.Select(segment => segment.SegmentIndex));
            _flushedSinceOpen.Add(volumeId);
        }
    }

    /// <summary>Closes and removes every segment file of the volume and of its snapshots; false if it held none.</summary>
    public bool DeleteVolume(Guid volumeId)
    {
        foreach (var snapshotId in SnapshotsOf(volumeId).ToList())
        {
            DeleteVolume(snapshotId);
        }
        lock (_gate)
        {
            foreach (var key in _open.Keys.Where(k => k.VolumeId == volumeId).ToList())
            {
                Close(key);
            }
            foreach (var key in _dirty.Keys.Where(k => k.VolumeId == volumeId).ToList())
            {
                _dirty.Remove(key);
            }
            foreach (var key in _cleanSince.Keys.Where(k => k.VolumeId == volumeId).ToList())
            {
                _cleanSince.Remove(key);
            }
            _newFiles.Remove(volumeId);
        }
        _versions.Forget(volumeId);
        _intents.Forget(volumeId);
        var directory = VolumeDirectory(volumeId);
        if (!Directory.Exists(directory))
        {
            return false;
        }
        Directory.Delete(directory, recursive: true);
        SyncDirectory(_volumesRoot);
        return true;
    }

    /// <summary>Whether the segment has a file on this host (it was written, or copied here, at some point).</summary>
    public bool HasFile(SegmentAddress segment) => File.Exists(SegmentPath(segment));

    /// <summary>The segment numbers of the volume that have a file on this host.</summary>
    public IReadOnlyList<long> ListSegments(Guid volumeId)
    {
        var directory = VolumeDirectory(volumeId);
        if (!Directory.Exists(directory))
        {
            return [];
        }
        return Directory.EnumerateFiles(directory, "*" + SegmentExtension)
            .Select(file => long.TryParse(Path.GetFileNameWithoutExtension(file), NumberStyles.None, CultureInfo.InvariantCulture, out var index) ? index : -1)
            .Where(index => index >= 0)
            .ToList();
    }

    /// <summary>Removes the files of the volume's segments that <paramref name="remove"/> selects, and forgets their versions.</summary>
    public int DeleteSegments(Guid volumeId, Func<long, bool> remove)
    {
        var removed = 0;
        foreach (var index in ListSegments(volumeId).Where(remove))
        {
            var segment = new SegmentAddress(volumeId, index);
            lock (_gate)
            {
                Close(segment);
                _dirty.Remove(segment);
                _cleanSince.Remove(segment);
            }
            File.Delete(SegmentPath(segment));
            File.Delete(ChecksumPath(segment));
            _versions.Set(volumeId, index, 0);
            removed++;
        }
        return removed;
    }

    /// <summary>The write version of a segment on this host (0: never written here; <see cref="SegmentVersions.Unknown"/>: suspect since an unclean shutdown).</summary>
    public long Version(SegmentAddress segment) => _versions.Get(segment.VolumeId, segment.SegmentIndex);

    /// <summary>The primary's version for a new write at <paramref name="epoch"/>; recorded at once.</summary>
    /// <summary>
    /// As the primary after an unclean shutdown: gives the segment the repair version of
    /// <paramref name="epoch"/>, which no replica can hold, so a resync copies it to every replica.
    /// Writes to it are refused until the map moves past that epoch.
    /// </summary>
    public async ValueTask MarkForRepairAsync(SegmentAddress segment, long epoch)
    {
        await PrepareWriteAsync(segment).ConfigureAwait(false);
        _versions.Set(segment.VolumeId, segment.SegmentIndex, SegmentVersions.RepairVersionOf(epoch));
    }

    public async ValueTask<long> NextVersionAsync(SegmentAddress segment, long epoch)
    {
        try
        {
            return await NextVersionCoreAsync(segment, epoch).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"version of segment {segment.SegmentIndex} of volume {segment.VolumeId} not recorded: {ex.Message}");
            throw; // not reached: Fail throws
        }
    }

    private async ValueTask<long> NextVersionCoreAsync(SegmentAddress segment, long epoch)
    {
        await PrepareWriteAsync(segment).ConfigureAwait(false);
        return _versions.Next(segment.VolumeId, segment.SegmentIndex, epoch);
    }

    /// <summary>This host's copy of the segment is bad: its version becomes unknown (durably), so the next resync copies it whatever the versions say.</summary>
    public void ForgetVersion(SegmentAddress segment)
    {
        _versions.Set(segment.VolumeId, segment.SegmentIndex, SegmentVersions.Unknown);
        SyncVersions(segment.VolumeId);
    }

    /// <summary>A replica applied a write of <paramref name="version"/>.</summary>
    public void RaiseVersion(SegmentAddress segment, long version)
    {
        try
        {
            _versions.Raise(segment.VolumeId, segment.SegmentIndex, version);
        }
        catch (Exception ex) when (IsDiskError(ex))
        {
            Fail($"version of segment {segment.SegmentIndex} of volume {segment.VolumeId} not recorded: {ex.Message}");
        }
    }

    /// <summary>The highest write version of any segment of any volume on this host.</summary>
    public long HighestVersion() => ListVolumes().Select(_versions.Highest).DefaultIfEmpty(0).Max();

    /// <summary>The volumes that have at least a directory on this host.</summary>
    public IReadOnlyList<Guid> ListVolumes() =>
        Directory.EnumerateDirectories(_volumesRoot)
            .Select(Path.GetFileName)
            .Select(name => Guid.TryParseExact(name, "N", out var id) ? id : Guid.Empty)
            .Where(id => id != Guid.Empty)
            .ToList();

    /// <summary>Bytes allocated on disk by segment files (holes do not count), and how many files there are.</summary>
    public (long BytesUsed, int SegmentFiles) Usage()
    {
        long bytes = 0;
        var files = 0;
        foreach (var file in Directory.EnumerateFiles(_volumesRoot, "*" + SegmentExtension, SearchOption.AllDirectories))
        {
            files++;
            bytes += AllocatedBytes(file);
        }
        return (bytes, files);
    }

    /// <summary>
    /// A clean shutdown: every volume flushed, then the clean-shutdown marker written and made
    /// durable, so the next start trusts every version. A failed disk or flush leaves no marker.
    /// </summary>
    public void Dispose()
    {
        var clean = !_crashOnDispose && ShutDownCleanly();
        lock (_gate)
        {
            foreach (var key in _open.Keys.ToList())
            {
                Close(key);
            }
        }
        _versions.Dispose();
        _intents.Dispose();
        if (clean)
        {
            try
            {
                using (var marker = new FileStream(Path.Combine(_volumesRoot, CleanShutdownFileName), FileMode.Create, FileAccess.Write))
                {
                    marker.Flush(flushToDisk: true);
                }
                SyncDirectory(_volumesRoot);
            }
            catch (Exception ex) when (ex is IOException or DiskFailedException or UnauthorizedAccessException)
            {
                // No marker: the next start repairs the segments the intents name. Safe, only slower.
            }
        }
    }

    private bool ShutDownCleanly()
    {
        if (Failure is not null)
        {
            return false;
        }
        try
        {
            foreach (var volumeId in ListVolumes())
            {
                FlushVolumeAsync(volumeId).GetAwaiter().GetResult();
            }
            lock (_gate)
            {
                // A data-port write can still be in flight as the host stops: its segment may end
                // up with a version its data does not have, so it must come back suspect.
                return !AnyWriteInFlight && _keptSuspect.Count == 0;
            }
        }
        catch (Exception ex) when (ex is IOException or DiskFailedException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static void CheckRange(int segmentSize, int offset, int length)
    {
        if (offset < 0 || length < 0 || (long)offset + length > segmentSize)
        {
            throw new InvalidRequestException($"range [{offset}, {(long)offset + length}) is outside a segment of {segmentSize} bytes");
        }
    }
}
