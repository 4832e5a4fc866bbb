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
        var next = ClusterMapTransitions.CreateSnapshot(_map, volumeName, snapshotName, Guid.NewGuid(), Now);
        await CommitAsync(next, $"snapshot '{snapshotName}' of volume '{volumeName}' taken");
        var volume = _map.FindVolume(volumeName)!;
        var snapshot = volume.FindSnapshot(snapshotName)!;
        return new SnapshotTaken(snapshot, await FenceOlderEpochsAsync(volume, snapshot.Epoch));
    }

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
