using System.Collections.Concurrent;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;

namespace OrleansStorage.Client.Library;

/// <summary>What <c>ostor snapshot list</c> shows of one snapshot.</summary>
/// <param name="ExclusiveBytes">Bytes on the primaries held by this snapshot alone: what deleting it frees (once per replica).</param>
public sealed record SnapshotUsage(SnapshotInfo Snapshot, long ExclusiveBytes);

/// <summary>Snapshots of volumes (docs/snapshots.md).</summary>
public sealed partial class OstorClient
{
    /// <summary>
    /// Takes a snapshot of the volume. When this returns, every write acknowledged before it was
    /// called is in the snapshot, and no write sent after it returns is.
    /// </summary>
    public async Task<SnapshotInfo> CreateSnapshotAsync(string volume, string snapshot)
    {
        var taken = await CreateWhenWritersKnownAsync(volume, snapshot);
        if (taken.SettleFor > TimeSpan.Zero)
        {
            // A primary did not confirm the new map (it may be dead or cut off): until its lease on
            // the older one runs out it might still admit a write that would land before the
            // snapshot. The volume's writers stay paused (by this create) until then.
            await Task.Delay(taken.SettleFor);
            await ManagementAsync(async m =>
            {
                await m.ResumeWritersAsync(volume, taken.PauseId);
                return true;
            }, idempotent: true);
        }
        await Maps.RefreshAsync(taken.Snapshot.Epoch);
        return taken.Snapshot;
    }

    /// <summary>Added to the wait a refusal asks for (<see cref="CreateWhenWritersKnownAsync"/>).</summary>
    private static readonly TimeSpan WritersKnownMargin = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// The create, asked again while the management service has just started and may not know
    /// every writer of the volume yet (for up to <see cref="VolumeWriters.AllKnownAfter"/>).
    /// </summary>
    private async Task<SnapshotTaken> CreateWhenWritersKnownAsync(string volume, string snapshot)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await ManagementAsync(m => m.CreateSnapshotAsync(volume, snapshot), idempotent: false);
            }
            catch (WritersNotYetKnownException ex) when (attempt < 3)
            {
                // A third refusal means management failed over twice meanwhile: the caller hears it.
                // The margin: a wait of less than a millisecond is no wait at all (Task.Delay
                // rounds down), and the service measures from a moment before its answer left.
                await Task.Delay(ex.RetryAfter + WritersKnownMargin);
            }
        }
    }

    public async Task DeleteSnapshotAsync(string volume, string snapshot)
    {
        await ManagementAsync(async m =>
        {
            await m.DeleteSnapshotAsync(volume, snapshot);
            return true;
        }, idempotent: false);
        await Maps.RefreshAsync();
    }

    /// <summary>The volume's snapshots, oldest first, with the bytes each alone holds.</summary>
    public async Task<IReadOnlyList<SnapshotUsage>> ListSnapshotsAsync(string volumeName)
    {
        var volume = (await Maps.RefreshAsync()).FindVolume(volumeName) ?? throw new VolumeNotFoundException(volumeName);
        var usage = new List<SnapshotUsage>();
        foreach (var snapshot in volume.Snapshots)
        {
            long bytes = 0;
            await PerGroupAsync(volume.VolumeId, async (map, group) =>
            {
                var held = await StorageServer(group.Primary).GetSnapshotUsageAsync(map.Epoch, volume.VolumeId, group.Index, snapshot.SnapshotId);
                Interlocked.Add(ref bytes, held);
            });
            usage.Add(new SnapshotUsage(snapshot, bytes));
        }
        return usage;
    }

    /// <summary>
    /// The byte ranges of the volume where <paramref name="from"/> and <paramref name="to"/> (a
    /// snapshot, or the volume as it is now when null) may differ, in order, from the segments'
    /// versions alone (no data is read): whole segments, cut to the larger image's size.
    /// </summary>
    public async Task<IReadOnlyList<(long Offset, long Length)>> DiffAsync(string volumeName, string from, string? to = null)
    {
        var volume = (await Maps.RefreshAsync()).FindVolume(volumeName) ?? throw new VolumeNotFoundException(volumeName);
        var first = volume.FindSnapshot(from) ?? throw new SnapshotNotFoundException(volumeName, from);
        var second = to is null ? null : volume.FindSnapshot(to) ?? throw new SnapshotNotFoundException(volumeName, to);
        var size = Math.Max(first.SizeBytes, second?.SizeBytes ?? volume.SizeBytes);
        var differing = new SortedSet<long>();
        await PerGroupAsync(volume.VolumeId, async (map, group) =>
        {
            var server = StorageServer(group.Primary);
            var before = await server.GetImageVersionsAsync(map.Epoch, volume.VolumeId, group.Index, first.SnapshotId);
            var after = await server.GetImageVersionsAsync(map.Epoch, volume.VolumeId, group.Index, second?.SnapshotId ?? Guid.Empty);
            var groups = map.FindVolume(volume.VolumeId)!.PlacementGroups.Length;
            lock (differing)
            {
                for (var i = 0; i < Math.Min(before.Length, after.Length); i++)
                {
                    // An unknown version (-1, a suspect segment) never proves two images equal.
                    if (before[i] != after[i] || before[i] < 0)
                    {
                        differing.Add(group.Index + ((long)i * groups));
                    }
                }
            }
        });
        var ranges = new List<(long Offset, long Length)>();
        foreach (var index in differing)
        {
            var start = index * volume.SegmentSizeBytes;
            if (start >= size)
            {
                continue;
            }
            var length = Math.Min(volume.SegmentSizeBytes, size - start);
            if (ranges.Count > 0 && ranges[^1].Offset + ranges[^1].Length == start)
            {
                ranges[^1] = (ranges[^1].Offset, ranges[^1].Length + length);
            }
            else
            {
                ranges.Add((start, length));
            }
        }
        return ranges;
    }

    /// <summary>Registers <paramref name="holder"/> as having the volume open for writing, until the result is disposed.</summary>
    public VolumeWriter HoldOpenForWriting(string volumeName, string holder) =>
        new(open => ManagementAsync(async m =>
        {
            await m.HoldWriterAsync(volumeName, holder, open);
            return true;
        }, idempotent: true));

    /// <summary>Who has the volume open for writing now (NBD connections, programs that said so).</summary>
    public Task<string[]> GetWritersAsync(string volumeName) => ManagementAsync(m => m.GetWritersAsync(volumeName), idempotent: true);

    /// <summary>
    /// Makes the volume hold what the snapshot holds again: every range that differs is rewritten
    /// from the snapshot (its holes trimmed), through the ordinary write path, so every replica
    /// and every later snapshot stay right. Returns the bytes rewritten. Refused while anyone has
    /// the volume open for writing, unless <paramref name="force"/>.
    /// </summary>
    public async Task<long> RollbackAsync(string volumeName, string snapshotName, bool force = false, Action<long>? progress = null, CancellationToken cancellationToken = default)
    {
        var writers = await GetWritersAsync(volumeName);
        if (writers.Length > 0 && !force)
        {
            throw new InvalidRequestException($"volume '{volumeName}' is open for writing by {string.Join(", ", writers)}: stop them first, or roll back under them with --force");
        }
        var volume = await OpenVolumeAsync(volumeName);
        var snapshot = await OpenVolumeAsync(volumeName + VolumeHandle.SnapshotSeparator + snapshotName);
        var ranges = await DiffAsync(volumeName, snapshotName);
        var segmentSize = volume.Info.SegmentSizeBytes;
        var buffer = new byte[segmentSize];
        long done = 0;
        foreach (var (offset, length) in ranges)
        {
            for (var at = offset; at < offset + length; at += segmentSize)
            {
                var piece = (int)Math.Min(segmentSize, offset + length - at);
                // Past the snapshot's end (the volume grew since) the snapshot reads as zeros.
                var inSnapshot = (int)Math.Clamp(snapshot.SizeBytes - at, 0, piece);
                await volume.TrimAsync(at, piece, cancellationToken);
                if (inSnapshot > 0)
                {
                    foreach (var (dataOffset, dataLength) in await snapshot.GetAllocationAsync(at, inSnapshot, cancellationToken))
                    {
                        var data = buffer.AsMemory(0, (int)dataLength);
                        await snapshot.ReadAsync(dataOffset, data, cancellationToken);
                        await volume.WriteAsync(dataOffset, data, cancellationToken: cancellationToken);
                    }
                }
                done += piece;
                progress?.Invoke(done);
            }
        }
        await volume.FlushAsync(cancellationToken);
        return done;
    }

    /// <summary>This client's writes in flight per volume, paused around snapshots of the volume.</summary>
    internal VolumeWriteGates Gates { get; } = new();

    private readonly Lock _watchLock = new();
    // Read on every write without the lock: only the first write to a volume takes it.
    private readonly ConcurrentDictionary<string, VolumeWriter> _watched = new(StringComparer.Ordinal);
    private IVolumeWriterObserver? _gatesReference;

    /// <summary>How long a writer told to start paused waits for its resume at most.</summary>
    private static readonly TimeSpan StartPausedFor = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Before this client's first write to a volume: the management service learns that it writes
    /// the volume, so that it pauses this client's writes around a snapshot. Best effort: with the
    /// management service unreachable the writes go on, unprotected from being split.
    /// </summary>
    internal async ValueTask WatchWritesAsync(VolumeInfo volume)
    {
        if (_watched.ContainsKey(volume.Name))
        {
            return;
        }
        IVolumeWriterObserver observer;
        lock (_watchLock)
        {
            observer = _gatesReference ??= _cluster.CreateObjectReference<IVolumeWriterObserver>(Gates);
        }
        try
        {
            var sentAt = Gates.Timestamp;
            var pauses = await ManagementAsync(m => m.WatchWritesAsync(volume.Name, observer, watching: true), idempotent: false);
            Gates.StartPaused(volume.VolumeId, pauses, StartPausedFor);
            Gates.Registered(volume.VolumeId, sentAt);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return; // asked again on the next write
        }
        lock (_watchLock)
        {
            // The renewals keep it registered (their first one repeats the call above, harmlessly),
            // and pause it by any create it was not told of (it was forgotten meanwhile).
            _watched.GetOrAdd(volume.Name, name => new VolumeWriter(async watching =>
            {
                var sentAt = Gates.Timestamp;
                var inForce = await ManagementAsync(m => m.WatchWritesAsync(name, observer, watching), idempotent: false);
                Gates.StartPaused(volume.VolumeId, inForce, StartPausedFor);
                if (watching)
                {
                    // A renewal that keeps failing holds this client's writes (VolumeWriteGates), not its reads.
                    Gates.Registered(volume.VolumeId, sentAt);
                }
            }));
        }
    }

    private async Task StopWatchingWritesAsync()
    {
        foreach (var writer in _watched.Values)
        {
            await writer.DisposeAsync();
        }
        if (_gatesReference is not null)
        {
            _cluster.DeleteObjectReference<IVolumeWriterObserver>(_gatesReference);
        }
    }

    /// <summary>A writable clone of <c>VOL@SNAP</c>: it reads the snapshot where it was never written.</summary>
    public async Task<VolumeInfo> CloneVolumeAsync(string source, string name, int replicationFactor)
    {
        var at = source.IndexOf(VolumeHandle.SnapshotSeparator, StringComparison.Ordinal);
        if (at <= 0 || at == source.Length - 1)
        {
            throw new InvalidRequestException($"'{source}' names no snapshot: a clone is made from VOLUME{VolumeHandle.SnapshotSeparator}SNAPSHOT");
        }
        var clone = await ManagementAsync(m => m.CloneVolumeAsync(source[..at], source[(at + 1)..], name, replicationFactor), idempotent: false);
        await Maps.RefreshAsync();
        return clone;
    }

    /// <summary>
    /// Copies into the clone every segment it still reads from its parent (online: writes go on
    /// meanwhile), then cuts the link. <paramref name="progress"/> hears segments done of all.
    /// Returns how many segments were copied.
    /// </summary>
    public async Task<long> FlattenAsync(string name, Action<long, long>? progress = null, CancellationToken cancellationToken = default)
    {
        var clone = await OpenVolumeAsync(name);
        var volume = clone.Info;
        if (volume.Parent is null)
        {
            throw new InvalidRequestException($"volume '{name}' is not a clone (or was flattened already)");
        }
        long copied = 0;
        for (long segment = 0; segment < volume.SegmentCount; segment++)
        {
            if (await clone.MaterializeIfNeededAsync(segment, cancellationToken))
            {
                copied++;
            }
            progress?.Invoke(segment + 1, volume.SegmentCount);
        }
        await ManagementAsync(m => m.FlattenVolumeAsync(name), idempotent: true);
        await Maps.RefreshAsync();
        return copied;
    }

    /// <summary>
    /// Runs <paramref name="call"/> once per placement group of the volume against its primary,
    /// all at once; a group whose call failed for a moved map is asked again on a fresh one.
    /// </summary>
    private async Task PerGroupAsync(Guid volumeId, Func<ClusterMap, PlacementGroup, Task> call)
    {
        var map = Maps.Current;
        var volume = map.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, map.Epoch);
        await Task.WhenAll(volume.PlacementGroups.Select(group => RetryAsync(current =>
        {
            var now = current.FindVolume(volumeId) ?? throw new VolumeNotFoundException(volumeId, current.Epoch);
            var leader = now.PlacementGroups[group.Index];
            if (!leader.IsAvailable)
            {
                throw new PlacementGroupUnavailableException(now.Name, leader.Index, current.Epoch, leader.Absent);
            }
            return call(current, leader);
        }, CancellationToken.None)));
    }
}
