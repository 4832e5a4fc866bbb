using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>Snapshots: one map change each (docs/snapshots.md).</summary>
public sealed partial class ManagementGrain
{
    /// <summary>
    /// Commits the snapshot at the next epoch and returns once no primary of the volume can admit
    /// a write at an older epoch any more: each has adopted the new map (asked here), or the
    /// lease it holds on an older map has run out. So a write sent after this returns is not in
    /// the snapshot, whichever map its sender held.
    /// </summary>
    public async Task<SnapshotInfo> CreateSnapshotAsync(string volumeName, string snapshotName)
    {
        var next = ClusterMapTransitions.CreateSnapshot(_map, volumeName, snapshotName, Guid.NewGuid(), Now);
        await CommitAsync(next, $"snapshot '{snapshotName}' of volume '{volumeName}' taken");
        var volume = _map.FindVolume(volumeName)!;
        var snapshot = volume.FindSnapshot(snapshotName)!;
        await FenceOlderEpochsAsync(volume, snapshot.Epoch);
        return snapshot;
    }

    public async Task DeleteSnapshotAsync(string volumeName, string snapshotName)
    {
        await CommitAsync(ClusterMapTransitions.DeleteSnapshot(_map, volumeName, snapshotName), $"snapshot '{snapshotName}' of volume '{volumeName}' deleted");
    }

    /// <summary>
    /// Waits until no primary of <paramref name="volume"/> serves an epoch before
    /// <paramref name="epoch"/>: asks each to adopt the map (bounded), then waits out the lease of
    /// any that did not answer.
    /// </summary>
    private async Task FenceOlderEpochsAsync(VolumeInfo volume, long epoch)
    {
        var primaries = volume.PlacementGroups.Where(pg => pg.IsAvailable).Select(pg => pg.Primary).Distinct(StringComparer.Ordinal).ToList();
        await Task.WhenAll(primaries.Select(async hostId =>
        {
            try
            {
                await GrainFactory.GetGrain<IStorageServerGrain>(hostId).RefreshMapAsync(epoch).WaitAsync(HostAnswerTimeout);
                _leases.Adopted(hostId, epoch);
            }
            catch (Exception ex)
            {
                Log.SnapshotFenceWait(logger, hostId, epoch, ex.Message);
            }
        }));
        var wait = primaries.Select(hostId => _leases.OlderEpochsServedFor(hostId, epoch)).DefaultIfEmpty(TimeSpan.Zero).Max();
        if (wait > TimeSpan.Zero)
        {
            await Task.Delay(wait);
        }
    }
}
