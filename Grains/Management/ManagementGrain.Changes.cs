using OrleansStorage.Errors;
using OrleansStorage.Identity;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>Requests that change the map: hosts registering and leaving, volumes, purges, and recovering a lost map.</summary>
public sealed partial class ManagementGrain
{
    public async Task<ClusterMap> RegisterHostAsync(HostRegistration registration)
    {
        var map = await MapForHostAsync(registration);
        await CommitAsync(_transitions.RegisterHost(map, registration, Now), $"host '{registration.HostId}' registered at {registration.Endpoint}");
        return _map;
    }

    public async Task<bool> RenewHostAsync(HostRegistration registration)
    {
        if (_map.FindHost(registration.HostId) is null)
        {
            return false;
        }
        var map = await MapForHostAsync(registration);
        var before = map.FindHost(registration.HostId);
        var reason = before is not null && before.NearFull != registration.NearFull && before.Endpoint == registration.Endpoint && before.DataEndpoint == registration.DataEndpoint && before.State == HostState.Up
            ? registration.NearFull
                ? $"host '{registration.HostId}' is near full: it takes no new replicas"
                : $"host '{registration.HostId}' has room again: it takes new replicas"
            : $"host '{registration.HostId}' is back at {registration.Endpoint}";
        await CommitAsync(_transitions.RegisterHost(map, registration, Now), reason);
        return true;
    }

    /// <summary>
    /// The map a host registers into. Only a fresh host (no superblock) may form a cluster in an
    /// empty database; a host holding data of a cluster waits for recover-map; a host of another
    /// cluster is refused.
    /// </summary>
    private async Task<ClusterMap> MapForHostAsync(HostRegistration registration)
    {
        ThrowIfFailed();
        if (!_map.IsUnformed)
        {
            if (registration.ClusterId != Guid.Empty && registration.ClusterId != _map.ClusterId)
            {
                throw new ForeignClusterException($"host '{registration.HostId}' belongs to cluster {registration.ClusterId}; this is cluster {_map.ClusterId}");
            }
            return _map;
        }
        if (registration.ClusterId != Guid.Empty)
        {
            throw new ManagementUnavailableException(
                $"the database holds no cluster map, but host '{registration.HostId}' holds data of cluster {registration.ClusterId}; rebuild the map with 'ostor cluster recover-map'");
        }
        var identity = await RecordIdentityAsync(Guid.NewGuid()); // the first fresh host forms the cluster
        return _map with { ClusterId = identity.ClusterId };
    }

    public async Task<ClusterMap> EvacuateHostAsync(string hostId)
    {
        await CommitAsync(HostLifecycle.Evacuate(_map, hostId, Now), $"host '{hostId}' is being evacuated");
        await CommitAsync(HostLifecycle.PlanRecovery(_map), "replacement replicas planned");
        return _map;
    }

    public async Task<ClusterMap> RemoveHostAsync(string hostId)
    {
        await CommitAsync(HostLifecycle.Remove(_map, hostId), $"host '{hostId}' removed");
        return _map;
    }

    public async Task<ClusterMap> RebalanceAsync()
    {
        await CommitAsync(HostLifecycle.PlanRebalance(_map), "rebalance step planned");
        return _map;
    }

    public async Task HostFailedAsync(string hostId, string reason)
    {
        Log.HostDiskFailed(logger, hostId, reason);
        var now = Now;
        await CommitAsync(HostLifecycle.MarkDown(_map, hostId, now), $"host '{hostId}' is Down: its disk failed ({reason})");
        await CommitAsync(HostLifecycle.MarkOut(_map, hostId, now), $"host '{hostId}' is Out: a failed disk is not trusted again");
        await CommitAsync(HostLifecycle.PlanRecovery(_map), "replacement replicas planned");
    }

    public async Task ReportReplicaFailedAsync(ReplicaFailure failure)
    {
        Log.ReplicaFailed(logger, failure.HostId, failure.GroupIndex, failure.VolumeId, failure.ReportingHostId, failure.Reason);
        await CommitAsync(
            HostLifecycle.ResyncReplica(_map, failure.VolumeId, failure.GroupIndex, failure.HostId, failure.Epoch),
            $"'{failure.HostId}' missed a write in placement group {failure.GroupIndex} of volume {failure.VolumeId}: resync before it serves");
    }

    /// <summary>
    /// Queued and applied by the next reconciliation round, all together: a host returning to many
    /// groups then moves the epoch a few times rather than once per group, and every client
    /// request in flight is not rejected as stale over and over.
    /// </summary>
    public Task CopyCompletedAsync(CopyCompletion completion)
    {
        _completedCopies.Add(completion);
        return Task.CompletedTask;
    }

    /// <summary>Queued like copy completions: one map change prunes the tombstones of every purge confirmed meanwhile.</summary>
    public Task ConfirmPurgedAsync(string hostId, Guid[] volumeIds)
    {
        _confirmedPurges.AddRange(volumeIds.Select(id => (hostId, id)));
        return Task.CompletedTask;
    }

    public async Task<VolumeInfo> CreateVolumeAsync(string name, long sizeBytes, int replicationFactor)
    {
        var next = _transitions.CreateVolume(_map, Guid.NewGuid(), name, sizeBytes, replicationFactor);
        await CommitAsync(next, $"volume '{name}' created ({sizeBytes} bytes, factor {replicationFactor})");
        return _map.FindVolume(name)!;
    }

    public async Task<VolumeInfo> ResizeVolumeAsync(string name, long newSizeBytes)
    {
        await CommitAsync(_transitions.ResizeVolume(_map, name, newSizeBytes), $"volume '{name}' resized to {newSizeBytes} bytes");
        return _map.FindVolume(name)!;
    }

    public async Task<VolumeInfo> SetVolumeQosAsync(string name, VolumeQos qos)
    {
        await CommitAsync(_transitions.SetVolumeQos(_map, name, qos), $"volume '{name}' QoS set to {qos}");
        return _map.FindVolume(name)!;
    }

    public async Task DeleteVolumeAsync(string name, bool withSnapshots)
    {
        var next = _transitions.DeleteVolume(_map, name, withSnapshots); // throws for a volume that does not exist, or has snapshots not meant to go
        var volumeId = _map.FindVolume(name)!.VolumeId;
        await CommitAsync(next, $"volume '{name}' deleted");
        // The tombstone alone makes every server drop the files when it adopts the map (a Down
        // host when it returns); asking the Up hosts now makes deletion immediate for them.
        var hosts = _map.Hosts.Where(h => h.State is HostState.Up or HostState.Draining).Select(h => h.HostId).ToList();
        var purged = await Task.WhenAll(hosts.Select(async hostId =>
        {
            try
            {
                // Bounded: a host whose silo died or restarted a moment ago must not hold up the management service.
                await GrainFactory.GetGrain<IStorageServerGrain>(hostId).PurgeVolumeAsync(volumeId, _map.Epoch).WaitAsync(HostAnswerTimeout);
                return hostId;
            }
            catch (Exception ex)
            {
                Log.PurgeFailed(logger, ex, volumeId, hostId);
                return null;
            }
        }));
        await CommitAsync(
            ClusterMapTransitions.ConfirmPurges(_map, purged.OfType<string>().Select(h => (h, volumeId))),
            $"the files of volume '{name}' are gone from {purged.Count(h => h is not null)} hosts");
    }

    public async Task<MapRecoveryReport> RecoverMapAsync(int expectedHosts)
    {
        ThrowIfFailed();
        if (!_map.IsUnformed)
        {
            throw new InvalidRequestException($"the database holds the map of cluster {_map.ClusterId} at epoch {_map.Epoch}; there is nothing to recover");
        }
        var live = LiveHosts()?.Hosts
            ?? throw new ManagementUnavailableException("cluster membership is still settling; try again in a moment");
        if (live.Count < expectedHosts)
        {
            throw new ManagementUnavailableException($"{live.Count} of the {expectedHosts} expected hosts are live ({string.Join(", ", live.Order(StringComparer.Ordinal))}); try again once they all run");
        }
        var reports = await Task.WhenAll(live.Order(StringComparer.Ordinal).Select(async hostId =>
        {
            try
            {
                return await GrainFactory.GetGrain<IStorageServerGrain>(hostId).GetDiskReportAsync().WaitAsync(HostAnswerTimeout);
            }
            catch (Exception ex)
            {
                throw new HostUnavailableException(hostId, $"it did not report its disk ({ex.Message}); retry once every host runs");
            }
        }));
        var recovery = MapRecovery.Rebuild(reports);
        await RecordIdentityAsync(recovery.Map.ClusterId);
        await CommitAsync(recovery.Map, $"map recovered from the disks of {reports.Length} hosts");
        foreach (var line in recovery.Lines)
        {
            Log.MapRecovered(logger, line);
        }
        return recovery;
    }
}
