using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>Snapshots: one map change each (docs/snapshots.md).</summary>
public sealed partial class ManagementGrain
{
    /// <summary>
    /// Commits the snapshot at the next epoch and asks every primary of the volume to adopt it.
    /// Returns how long the caller must still wait before reporting the snapshot taken: until no
    /// primary can admit a write at an older epoch any more (each adopted the new map, or the
    /// lease it holds on an older one ran out), so that a write sent after that is not in the
    /// snapshot, whichever map its sender held. The wait is the caller's, not this service's: a
    /// dead primary's lease must not hold up every other map change.
    /// </summary>
    public async Task<SnapshotTaken> CreateSnapshotAsync(string volumeName, string snapshotName)
    {
        // Bad input is refused before any writer is paused.
        _ = ClusterMapTransitions.CreateSnapshot(_map, volumeName, snapshotName, Guid.NewGuid(), Now);
        var volumeId = _map.FindVolume(volumeName)!.VolumeId;
        await RequireWitnessedAsync($"snapshot '{snapshotName}' of volume '{volumeName}'");
        var unknownFor = _writerPauses.UnknownWritersFor(volumeId);
        if (unknownFor > TimeSpan.Zero)
        {
            // A writer that registered with an earlier activation is paused by nobody until it renews here.
            throw new WritersNotYetKnownException(volumeName, unknownFor);
        }
        var pauseId = _writerPauses.Begin(volumeName);
        var settled = false;
        ClusterMap? next = null;
        // A slow commit (a database stall) must not outlast the writers' hold limit.
        using var creating = new CancellationTokenSource();
        var keepingPaused = KeepWritersPausedAsync(volumeName, volumeId, pauseId, creating.Token);
        try
        {
            await QuiesceWritersAsync(volumeName, volumeId, pauseId);
            next = ClusterMapTransitions.CreateSnapshot(_map, volumeName, snapshotName, Guid.NewGuid(), Now);
            _committingSnapshot = true;
            try
            {
                await CommitAsync(next, $"snapshot '{snapshotName}' of volume '{volumeName}' taken");
            }
            finally
            {
                _committingSnapshot = false;
            }
            var volume = _map.FindVolume(volumeName)!;
            var snapshot = volume.FindSnapshot(snapshotName)!;
            var settleFor = await FenceOlderEpochsAsync(volume, snapshot.Epoch);
            // With a primary still to wait out, the writers stay paused until the creator has
            // waited too and calls ResumeWritersAsync (or they give up waiting on their own).
            settled = settleFor == TimeSpan.Zero;
            return new SnapshotTaken(snapshot, settleFor, pauseId);
        }
        catch
        {
            // Writers go on at once only if the snapshot surely is not in the database. A map write
            // whose answer was lost may have landed: the next activation then loads the snapshot and
            // the primaries adopt it one by one, so a writer let go now could split a write across
            // it. Such a pause is kept until the writers' hold limit, past any primary's lease.
            settled = next is null || !WriteMayHaveLanded(next);
            if (!settled)
            {
                Log.SnapshotPauseKept(logger, snapshotName, volumeName, next!.Epoch, WriterHoldLimit);
            }
            throw;
        }
        finally
        {
            await creating.CancelAsync();
            await keepingPaused;
            if (settled)
            {
                ResumeWriters(volumeName, volumeId, pauseId);
            }
            else
            {
                // Held from now for a full hold limit: past the creator's wait for a primary's lease
                // (LeaseOptions checks that a lease is shorter), or past any lease should this commit have landed unseen.
                RepeatPause(volumeName, volumeId, pauseId);
            }
        }
    }

    /// <summary>
    /// Asks the writers for the pause again every <see cref="WriterPauseRepeat"/> until
    /// <paramref name="creating"/> is cancelled, so that each holds it a full hold limit from the
    /// last time: a pause outlasts a slow commit, and a dead management still frees its writers.
    /// </summary>
    private async Task KeepWritersPausedAsync(string volumeName, Guid volumeId, Guid pauseId, CancellationToken creating)
    {
        try
        {
            while (true)
            {
                await Task.Delay(WriterPauseRepeat, clock, creating);
                RepeatPause(volumeName, volumeId, pauseId);
            }
        }
        catch (OperationCanceledException)
        {
            // The create is over: it resumes the writers or leaves them their last hold limit.
        }
    }

    /// <summary>Asks for the pause again, not waiting for writes in flight nor for the answers; a writer registered since is paused too.</summary>
    private void RepeatPause(string volumeName, Guid volumeId, Guid pauseId)
    {
        _writerPauses.Extend(pauseId);
        foreach (var observer in _writerPauses.Ask(volumeName, pauseId))
        {
            observer.QuiesceAsync(volumeId, pauseId, TimeSpan.Zero, WriterHoldLimit).Ignore();
        }
    }

    public Task ResumeWritersAsync(string volumeName, Guid pauseId)
    {
        if (_map.FindVolume(volumeName) is { } volume)
        {
            ResumeWriters(volumeName, volume.VolumeId, pauseId);
        }
        return Task.CompletedTask;
    }

    /// <summary>
    /// Asks every client that writes the volume to hold new writes and let its writes in flight
    /// finish, all at once; one that does not answer in time (dead, cut off) is not waited for.
    /// </summary>
    private async Task QuiesceWritersAsync(string volumeName, Guid volumeId, Guid pauseId)
    {
        await Task.WhenAll(_writerPauses.Ask(volumeName, pauseId).Select(async observer =>
        {
            try
            {
                await observer.QuiesceAsync(volumeId, pauseId, WriterDrainTime, WriterHoldLimit).WaitAsync(WriterDrainTime + TimeSpan.FromSeconds(0.5));
            }
            catch (Exception ex)
            {
                Log.WriterQuiesceFailed(logger, volumeName, ex.Message);
            }
        }));
    }

    /// <summary>
    /// Ends this create's pause, and only it: a writer paused by another create too stays paused.
    /// Told to every writer even if the pause had ended: a repeated resume is harmless, and one
    /// that overtakes its pause on the way keeps that pause from beginning. Told also to a writer
    /// it paused whose registration ran out meanwhile (<see cref="VolumeWriterPauses.End"/>).
    /// </summary>
    private void ResumeWriters(string volumeName, Guid volumeId, Guid pauseId)
    {
        foreach (var observer in _writerPauses.End(volumeName, pauseId))
        {
            observer.ResumeAsync(volumeId, pauseId).Ignore(); // one that misses it resumes on its own after WriterHoldLimit
        }
    }

    public Task<Guid[]> WatchWritesAsync(string volumeName, IVolumeWriterObserver observer, bool watching) =>
        Task.FromResult(_writerPauses.Register(volumeName, observer.GetGrainId(), observer, watching));

    /// <summary>
    /// How long a snapshot waits for its volume's writes in flight to finish. A write stuck longer
    /// is waiting for a dead host; it is not waited for (and may be split). Short enough that the
    /// whole create stays within a client's request timeout (5 s).
    /// </summary>
    public static readonly TimeSpan WriterDrainTime = TimeSpan.FromSeconds(2);

    /// <summary>How long a paused writer waits for its resume before it goes on by itself: past any lease the creator may wait out.</summary>
    internal static readonly TimeSpan WriterHoldLimit = TimeSpan.FromSeconds(20);

    /// <summary>How often a create under way asks its writers for the pause again: well within <see cref="WriterHoldLimit"/>, so a lost repeat or two costs nothing.</summary>
    private static readonly TimeSpan WriterPauseRepeat = TimeSpan.FromSeconds(5);

    /// <summary>Writers of each volume and the pauses in force; made anew by each activation (<see cref="OnActivateAsync"/>).</summary>
    private VolumeWriterPauses _writerPauses = null!;

    public async Task DeleteSnapshotAsync(string volumeName, string snapshotName)
    {
        await CommitAsync(ClusterMapTransitions.DeleteSnapshot(_map, volumeName, snapshotName), $"snapshot '{snapshotName}' of volume '{volumeName}' deleted");
    }

    public async Task<VolumeInfo> CloneVolumeAsync(string sourceVolume, string snapshotName, string name, int replicationFactor)
    {
        var next = _transitions.CloneVolume(_map, sourceVolume, snapshotName, Guid.NewGuid(), name, replicationFactor);
        await CommitAsync(next, $"volume '{name}' cloned from '{sourceVolume}@{snapshotName}' (factor {replicationFactor})");
        return _map.FindVolume(name)!;
    }

    public async Task<VolumeInfo> FlattenVolumeAsync(string name)
    {
        await CommitAsync(ClusterMapTransitions.FlattenVolume(_map, name), $"clone '{name}' flattened: it no longer reads through to its parent");
        return _map.FindVolume(name)!;
    }

    private readonly Dictionary<(string Volume, string Holder), DateTimeOffset> _writers = [];

    public Task HoldWriterAsync(string volumeName, string holder, bool open)
    {
        var now = Now;
        foreach (var stale in _writers.Where(w => w.Value <= now).Select(w => w.Key).ToList())
        {
            _writers.Remove(stale);
        }
        if (open)
        {
            _writers[(volumeName, holder)] = now + VolumeWriters.LeaseTime;
        }
        else
        {
            _writers.Remove((volumeName, holder));
        }
        return Task.CompletedTask;
    }

    public Task<string[]> GetWritersAsync(string volumeName)
    {
        var now = Now;
        return Task.FromResult(_writers.Where(w => w.Key.Volume == volumeName && w.Value > now).Select(w => w.Key.Holder).Order(StringComparer.Ordinal).ToArray());
    }

    /// <summary>
    /// How long until no primary of <paramref name="volume"/> serves an epoch before
    /// <paramref name="epoch"/>: asks each to adopt the map (bounded by <see cref="FenceAnswerTimeout"/>);
    /// for any that did not answer, what is left of its lease.
    /// </summary>
    private async Task<TimeSpan> FenceOlderEpochsAsync(VolumeInfo volume, long epoch)
    {
        var primaries = volume.PlacementGroups.Where(pg => pg.IsAvailable).Select(pg => pg.Primary).Distinct(StringComparer.Ordinal).ToList();
        await Task.WhenAll(primaries.Select(async hostId =>
        {
            try
            {
                await GrainFactory.GetGrain<IStorageServerGrain>(hostId).RefreshMapAsync(epoch).WaitAsync(FenceAnswerTimeout);
                _leases.Adopted(hostId, epoch);
            }
            catch (Exception ex)
            {
                Log.SnapshotFenceWait(logger, hostId, epoch, ex.Message);
            }
        }));
        return primaries.Select(hostId => _leases.OlderEpochsServedFor(hostId, epoch)).DefaultIfEmpty(TimeSpan.Zero).Max();
    }

    /// <summary>A live primary adopts a map in milliseconds; one that takes longer is waited out by its lease instead.</summary>
    private static readonly TimeSpan FenceAnswerTimeout = TimeSpan.FromSeconds(1);
}
