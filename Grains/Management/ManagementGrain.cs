using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using System.Globalization;
using Orleans.Runtime.MembershipService.SiloMetadata;
using OrleansStorage.Hosting;
using Orleans.Streams;
using OrleansStorage.Logging;
using OrleansStorage.Placement;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>
/// The management service. Mutations run one at a time (the grain is not reentrant): each
/// computes the next map, persists it (epoch + 1) and only then publishes it. Reads of the map
/// and mismatch reports interleave with them and see the last persisted map.
/// A timer compares the map with Orleans silo membership and drives recovery: hosts whose silo
/// left become Down, then Out after the grace period; groups short of replicas get pending ones,
/// and their primaries are asked to fill them. After a failover the new activation loads the
/// map from PostgreSQL and the same comparison applies whatever changed meanwhile.
/// </summary>
[GrainType("ostor-management")]
public sealed class ManagementGrain(
    [PersistentState("cluster", StorageNames.ClusterStore)] IPersistentState<ManagementState> state,
    IOptions<ManagementOptions> options,
    IClusterMembershipService membership,
    ISiloMetadataCache siloMetadata,
    ILocalSiloDetails silo,
    ILogger<ManagementGrain> logger) : Grain, IManagementServiceGrain
{
    /// <summary>How long management waits on a storage server; a dead one must not stall it.</summary>
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Removing a volume's files may take a while on a big volume; past this the host finishes on its own.</summary>
    private static readonly TimeSpan PurgeTimeout = TimeSpan.FromSeconds(10);
    private readonly ClusterMapTransitions _transitions = new(options.Value);
    private readonly Dictionary<string, long> _mismatchReports = new(StringComparer.Ordinal);
    private readonly List<CopyCompletion> _completedCopies = [];
    private IAsyncStream<ClusterMap>? _stream;
    private DateTimeOffset _activatedAt;
    private long _activatedAtEpoch;

    private ClusterMap Map => state.State.Map;

    private static DateTimeOffset Now => DateTimeOffset.UtcNow;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        state.State.Map = Map.Normalized();
        _activatedAt = Now;
        _activatedAtEpoch = Map.Epoch;
        _stream = this.GetStreamProvider(ClusterMapStream.ProviderName)
            .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
        var interval = options.Value.ReconcileInterval;
        this.RegisterGrainTimer(ReconcileAsync, new GrainTimerCreationOptions(interval, interval) { KeepAlive = true });
        Log.ManagementActivated(logger, Map.Epoch, Map.Hosts.Length, Map.Volumes.Length);
        return Task.CompletedTask;
    }

    public async Task<ClusterMap> RegisterHostAsync(HostRegistration registration)
    {
        await CommitAsync(_transitions.RegisterHost(Map, registration, Now), $"host '{registration.HostId}' registered at {registration.Endpoint}");
        return Map;
    }

    public async Task<bool> RenewHostAsync(HostRegistration registration)
    {
        if (Map.FindHost(registration.HostId) is null)
        {
            return false;
        }
        await CommitAsync(_transitions.RegisterHost(Map, registration, Now), $"host '{registration.HostId}' is back at {registration.Endpoint}");
        return true;
    }

    public async Task<ClusterMap> EvacuateHostAsync(string hostId)
    {
        await CommitAsync(HostLifecycle.Evacuate(Map, hostId, Now), $"host '{hostId}' is being evacuated");
        await CommitAsync(HostLifecycle.PlanRecovery(Map), "replacement replicas planned");
        return Map;
    }

    public async Task<ClusterMap> RemoveHostAsync(string hostId)
    {
        await CommitAsync(HostLifecycle.Remove(Map, hostId), $"host '{hostId}' removed");
        return Map;
    }

    public async Task<ClusterMap> RebalanceAsync()
    {
        await CommitAsync(HostLifecycle.PlanRebalance(Map), "rebalance step planned");
        return Map;
    }

    public async Task ReportReplicaFailedAsync(ReplicaFailure failure)
    {
        Log.ReplicaFailed(logger, failure.HostId, failure.GroupIndex, failure.VolumeId, failure.ReportingHostId, failure.Reason);
        await CommitAsync(
            HostLifecycle.ResyncReplica(Map, failure.VolumeId, failure.GroupIndex, failure.HostId, failure.Epoch),
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

    public async Task<VolumeInfo> CreateVolumeAsync(string name, long sizeBytes, int replicationFactor)
    {
        var next = _transitions.CreateVolume(Map, Guid.NewGuid(), name, sizeBytes, replicationFactor);
        await CommitAsync(next, $"volume '{name}' created ({sizeBytes} bytes, factor {replicationFactor})");
        return Map.FindVolume(name)!;
    }

    public async Task<VolumeInfo> ResizeVolumeAsync(string name, long newSizeBytes)
    {
        await CommitAsync(_transitions.ResizeVolume(Map, name, newSizeBytes), $"volume '{name}' resized to {newSizeBytes} bytes");
        return Map.FindVolume(name)!;
    }

    public async Task DeleteVolumeAsync(string name)
    {
        var next = _transitions.DeleteVolume(Map, name); // throws for a volume that does not exist
        var volumeId = Map.FindVolume(name)!.VolumeId;
        await CommitAsync(next, $"volume '{name}' deleted");
        // The map change alone makes every server drop the files when it applies it (a Down host
        // when it activates again); removing them now makes deletion immediate for the hosts that are up.
        var hosts = Map.Hosts.Where(h => h.State is HostState.Up or HostState.Draining).Select(h => h.HostId).ToList();
        await Task.WhenAll(hosts.Select(async hostId =>
        {
            try
            {
                // Bounded: a host whose silo died a moment ago must not hold up the management service.
                await GrainFactory.GetGrain<IStorageServerGrain>(hostId).PurgeVolumeAsync(volumeId, Map.Epoch).WaitAsync(PurgeTimeout);
            }
            catch (Exception ex)
            {
                Log.PurgeFailed(logger, ex, volumeId, hostId);
            }
        }));
    }

    public Task<ClusterMap> GetMapAsync() => Task.FromResult(Map);

    public Task<ManagementStatus> GetStatusAsync() =>
        Task.FromResult(new ManagementStatus(silo.SiloAddress.ToString(), Map.Epoch, _activatedAtEpoch, _activatedAt));

    public Task<IReadOnlyList<HostReport>> GetHostsAsync() =>
        Task.FromResult<IReadOnlyList<HostReport>>(
            Map.Hosts.Select(h => new HostReport(h, _mismatchReports.GetValueOrDefault(h.HostId))).ToList());

    public Task ReportMismatchAsync(EpochMismatch mismatch)
    {
        Log.MismatchReported(logger, mismatch.ReportingHostId, mismatch.ServerEpoch, mismatch.RequestEpoch, Map.Epoch);
        _mismatchReports[mismatch.ReportingHostId] = _mismatchReports.GetValueOrDefault(mismatch.ReportingHostId) + 1;
        if (mismatch.ServerEpoch < Map.Epoch && Map.FindHost(mismatch.ReportingHostId) is not null)
        {
            // The reporting server is behind: send it the current map directly, not waiting for a push.
            GrainFactory.GetGrain<IStorageServerGrain>(mismatch.ReportingHostId).ApplyMapAsync(Map).Ignore();
        }
        return Task.CompletedTask;
    }

    /// <summary>One round of following membership and driving recovery; a failure is logged and the next round tries again.</summary>
    private async Task ReconcileAsync(CancellationToken cancellationToken)
    {
        try
        {
            var now = Now;
            if (LiveHosts() is { } membershipView && now - membershipView.ClusterStarted >= options.Value.MembershipSettleTime)
            {
                var live = membershipView.Hosts;
                foreach (var host in Map.Hosts.Where(h => h.State is HostState.Up or HostState.Draining && !live.Contains(h.HostId)).ToList())
                {
                    Log.HostLeft(logger, host.HostId);
                    await CommitAsync(HostLifecycle.MarkDown(Map, host.HostId, now), $"host '{host.HostId}' is Down (its silo left the cluster)");
                }
            }
            foreach (var host in Map.Hosts.Where(h => h.State == HostState.Down && now - h.StateSince >= options.Value.DownGracePeriod).ToList())
            {
                await CommitAsync(HostLifecycle.MarkOut(Map, host.HostId, now), $"host '{host.HostId}' is Out (Down longer than {options.Value.DownGracePeriod})");
            }
            await ApplyCompletedCopiesAsync();
            await CommitAsync(HostLifecycle.PlanRecovery(Map), "replacement replicas planned");
            if (options.Value.AutoRebalance)
            {
                await CommitAsync(HostLifecycle.PlanRebalance(Map), "automatic rebalance step planned");
            }
            if (options.Value.AutoBalancePrimaries)
            {
                await CommitAsync(HostLifecycle.PlanPrimaryBalance(Map), "primaries evened out");
            }
            await KickCopiesAsync();
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            Log.ReconcileFailed(logger, ex);
        }
    }

    /// <summary>Moves every filled pending replica into its acting set in one map change.</summary>
    private async Task ApplyCompletedCopiesAsync()
    {
        if (_completedCopies.Count == 0)
        {
            return;
        }
        var next = Map;
        foreach (var completion in _completedCopies)
        {
            var job = completion.Job;
            next = HostLifecycle.CompleteCopy(next, job.VolumeId, job.GroupIndex, job.TargetHostId, completion.StartEpoch);
        }
        var joined = _completedCopies.Count;
        _completedCopies.Clear();
        // One change, however many groups it covers.
        await CommitAsync(next.Epoch > Map.Epoch ? next with { Epoch = Map.Epoch + 1 } : Map, $"{joined} filled replicas join their acting sets");
    }

    /// <summary>
    /// HostIds with a live silo, from this silo's view of membership, and when the oldest live silo
    /// started; null while some live silo's metadata is not known yet (it is still on the way), so
    /// no host is judged on a partial view.
    /// </summary>
    /// <remarks>
    /// The start time tells a cluster that is starting (its silos join one by one: give them
    /// <see cref="ManagementOptions.MembershipSettleTime"/>) from one that has been running, where
    /// a host without a live silo is down now, even right after this service failed over.
    /// </remarks>
    private (HashSet<string> Hosts, DateTimeOffset ClusterStarted)? LiveHosts()
    {
        var live = new HashSet<string>(StringComparer.Ordinal);
        var started = _activatedAt;
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Status is not (SiloStatus.Active or SiloStatus.Joining or SiloStatus.Created))
            {
                continue;
            }
            var metadata = siloMetadata.GetSiloMetadata(member.SiloAddress).Metadata;
            if (!metadata.TryGetValue(HostPinnedPlacementDirector.HostIdMetadataKey, out var hostId))
            {
                return null;
            }
            live.Add(hostId);
            if (metadata.TryGetValue(StorageSiloBuilderExtensions.SiloStartedMetadataKey, out var text)
                && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var milliseconds))
            {
                var siloStarted = DateTimeOffset.FromUnixTimeMilliseconds(milliseconds);
                started = siloStarted < started ? siloStarted : started;
            }
        }
        return (live, started);
    }

    /// <summary>Asks each primary with pending replicas to fill them; a primary already doing so ignores the request.</summary>
    private async Task KickCopiesAsync()
    {
        var jobs = Map.AllGroups()
            .Where(x => x.Group.IsAvailable && !x.Group.Pending.IsEmpty)
            .SelectMany(x => x.Group.Pending.Select(p => (x.Group.Primary, Job: new CopyJob(x.Volume.VolumeId, x.Group.Index, p.HostId, p.Resync))))
            .GroupBy(x => x.Primary, x => x.Job);
        var epoch = Map.Epoch;
        await Task.WhenAll(jobs.Select(async perPrimary =>
        {
            try
            {
                await GrainFactory.GetGrain<IStorageServerGrain>(perPrimary.Key).EnsureCopiesAsync(epoch, [.. perPrimary]).WaitAsync(CallTimeout);
            }
            catch (Exception ex)
            {
                Log.CopyKickFailed(logger, ex, perPrimary.Key);
            }
        }));
    }

    /// <summary>Persist, then publish. A map equal to the current one is no change and is not written.</summary>
    private async Task CommitAsync(ClusterMap next, string change)
    {
        if (next.Epoch == Map.Epoch)
        {
            return;
        }
        var previous = state.State.Map;
        state.State.Map = next;
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            state.State.Map = previous;
            throw;
        }
        Log.MapChanged(logger, next.Epoch, change);
        try
        {
            await _stream!.OnNextAsync(next);
        }
        catch (Exception ex)
        {
            Log.PublishFailed(logger, ex, next.Epoch);
        }
    }
}
