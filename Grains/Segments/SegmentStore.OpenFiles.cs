using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Errors;
using OrleansStorage.Files;
using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>The cache of open segment files: leases on handles, eviction of idle ones, creating files and marking them dirty.</summary>
public sealed partial class SegmentStore
{
    /// <summary>
    /// Leases the segment's open handle, opening the file if needed (creating it only for
    /// <paramref name="create"/>; otherwise a missing file gives a lease without a handle). A
    /// leased handle is never closed under its user: eviction only closes idle ones.
    /// </summary>
    private Lease Acquire(SegmentAddress segment, bool create)
    {
        lock (_gate)
        {
            if (_open.TryGetValue(segment, out var cached))
            {
                cached.Leases++;
                cached.LastUse = ++_useClock;
                return new Lease(this, cached);
            }
        }
        var path = SegmentPath(segment);
        SafeFileHandle handle;
        try
        {
            // Most files exist: opening first costs no exception on the common path.
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            if (!create)
            {
                return new Lease(this, null); // never written: reads as zeros
            }
            handle = CreateSegmentFile(segment, path);
        }
        var checksums = OpenChecksumFile(segment);
        lock (_gate)
        {
            if (_open.TryGetValue(segment, out var raced))
            {
                handle.Dispose(); // another request opened it meanwhile
                checksums.Dispose();
                raced.Leases++;
                raced.LastUse = ++_useClock;
                return new Lease(this, raced);
            }
            var opened = new OpenSegment(segment, handle, checksums) { Leases = 1, LastUse = ++_useClock };
            _open[segment] = opened;
            EvictIdleLocked();
            return new Lease(this, opened);
        }
    }

    private void Release(OpenSegment segment)
    {
        lock (_gate)
        {
            segment.Leases--;
            if (segment.Closed && segment.Leases == 0)
            {
                segment.Dispose();
            }
            EvictIdleLocked();
        }
    }

    /// <summary>Closes idle handles, least recently used first, until the bound holds (or only leased ones are left).</summary>
    private void EvictIdleLocked()
    {
        while (_open.Count > _maxOpenSegments)
        {
            OpenSegment? oldest = null;
            foreach (var candidate in _open.Values)
            {
                if (candidate.Leases == 0 && (oldest is null || candidate.LastUse < oldest.LastUse))
                {
                    oldest = candidate;
                }
            }
            if (oldest is null)
            {
                return;
            }
            Close(oldest.Segment);
        }
    }

    /// <summary>Forgets the handle; it is disposed now if idle, else when its last lease ends.</summary>
    private void Close(SegmentAddress segment)
    {
        if (_open.Remove(segment, out var open))
        {
            open.Closed = true;
            if (open.Leases == 0)
            {
                open.Dispose();
            }
        }
    }

    /// <summary>
    /// Before a change to a segment's version alone (data writes use <see cref="BeginDataWriteAsync"/>):
    /// it is dirty (the next flush syncs it) and its write intent is durable. Both under one lock
    /// with the flush's clearing, so a flush never clears the intent of a change that has begun.
    /// </summary>
    private Task PrepareWriteAsync(SegmentAddress segment)
    {
        lock (_gate)
        {
            return MarkDirty(segment);
        }
    }

    /// <summary>The segment is dirty from now on and its intent is being made durable. Under _gate.</summary>
    private Task MarkDirty(SegmentAddress segment)
    {
        _dirty[segment] = ++_writeGeneration;
        _cleanSince.Remove(segment);
        return _intents.Mark(segment.VolumeId, segment.SegmentIndex);
    }

    /// <summary>Creates a segment's file, remembering that its directory entry is not durable yet; a file created meanwhile by another request is opened instead.</summary>
    private SafeFileHandle CreateSegmentFile(SegmentAddress segment, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        try
        {
            var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous);
            RememberNewFile(segment);
            return handle;
        }
        catch (IOException) when (File.Exists(path))
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous);
        }
    }

    /// <summary>A file of the segment was created: its directory entry is not durable until the volume's directory is fsynced.</summary>
    private void RememberNewFile(SegmentAddress segment)
    {
        lock (_gate)
        {
            if (!_newFiles.TryGetValue(segment.VolumeId, out var created))
            {
                _newFiles[segment.VolumeId] = created = [];
            }
            created.Add(segment.SegmentIndex);
        }
    }

    private sealed class OpenSegment(SegmentAddress segment, SafeFileHandle handle, SafeFileHandle checksums) : IDisposable
    {
        public SegmentAddress Segment { get; } = segment;
        public SafeFileHandle Handle { get; } = handle;
        public SafeFileHandle Checksums { get; } = checksums;

        public void Dispose()
        {
            Handle.Dispose();
            Checksums.Dispose();
        }

        public int Leases { get; set; }
        public long LastUse { get; set; }
        public bool Closed { get; set; }
    }

    private readonly struct Lease(SegmentStore store, OpenSegment? segment) : IDisposable
    {
        public SafeFileHandle? Handle => segment?.Handle;

        /// <summary>The segment's checksum file: open whenever <see cref="Handle"/> is.</summary>
        public SafeFileHandle? Checksums => segment?.Checksums;

        public void Dispose()
        {
            if (segment is not null)
            {
                store.Release(segment);
            }
        }
    }
}
