using System.Globalization;
using OrleansStorage.Hosting;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Placement;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>
/// Following membership and driving recovery, once per <see cref="ManagementOptions.ReconcileInterval"/>:
/// hosts whose silo left become Down, then Out after the grace period; groups short of replicas get
/// pending ones, and their primaries are asked to fill them. After a failover the new activation
/// loads the map from PostgreSQL and the same comparison applies whatever changed meanwhile.
/// </summary>
public sealed partial class ManagementGrain
{
    /// <summary>One round; a failure is logged and the next round tries again.</summary>
    private async Task ReconcileAsync(CancellationToken cancellationToken)
    {
        if (_failure is not null || _unsettledWrite is not null || _map.IsUnformed || Unconfirmed() is not null)
        {
            return; // nothing may change until the database confirms the map again (ManagementGrain.Confirmation.cs)
        }
        try
        {
            await CatchUpGenerationAsync();
            var now = Now;
            if (LiveHosts() is { } membershipView && now - membershipView.ClusterStarted >= options.Value.MembershipSettleTime)
            {
                var live = membershipView.Hosts;
                foreach (var host in _map.Hosts.Where(h => h.State is HostState.Up or HostState.Draining && !live.Contains(h.HostId)).ToList())
                {
                    Log.HostLeft(logger, host.HostId);
                    await CommitAsync(HostLifecycle.MarkDown(_map, host.HostId, now), $"host '{host.HostId}' is Down (its silo left the cluster)");
                }
            }
            foreach (var host in _map.Hosts.Where(h => h.State == HostState.Down && now - h.StateSince >= options.Value.DownGracePeriod).ToList())
            {
                await CommitAsync(HostLifecycle.MarkOut(_map, host.HostId, now), $"host '{host.HostId}' is Out (Down longer than {options.Value.DownGracePeriod})");
            }
            await ApplyCompletedCopiesAsync();
            await ApplyConfirmedPurgesAsync();
            await CommitAsync(HostLifecycle.PlanRecovery(_map), "replacement replicas planned");
            if (options.Value.AutoRebalance)
            {
                await CommitAsync(HostLifecycle.PlanRebalance(_map), "automatic rebalance step planned");
            }
            if (options.Value.AutoBalancePrimaries)
            {
                await CommitAsync(HostLifecycle.PlanPrimaryBalance(_map), "primaries evened out");
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
        var next = _map;
        foreach (var completion in _completedCopies)
        {
            var job = completion.Job;
            next = HostLifecycle.CompleteCopy(next, job.VolumeId, job.GroupIndex, job.TargetHostId, completion.StartEpoch);
        }
        var joined = _completedCopies.Count;
        _completedCopies.Clear();
        // One change, however many groups it covers.
        await CommitAsync(next.Epoch > _map.Epoch ? next with { Epoch = _map.Epoch + 1 } : _map, $"{joined} filled replicas join their acting sets");
    }

    /// <summary>Takes every purge confirmed since the last round off the tombstones, in one map change.</summary>
    private async Task ApplyConfirmedPurgesAsync()
    {
        if (_confirmedPurges.Count == 0)
        {
            return;
        }
        var confirmed = _confirmedPurges.ToList();
        _confirmedPurges.Clear();
        await CommitAsync(ClusterMapTransitions.ConfirmPurges(_map, confirmed), $"{confirmed.Count} purges of deleted volumes confirmed");
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
        var jobs = _map.AllGroups()
            .Where(x => x.Group.IsAvailable && !x.Group.Pending.IsEmpty)
            .SelectMany(x => x.Group.Pending.Select(p => (x.Group.Primary, Job: new CopyJob(x.Volume.VolumeId, x.Group.Index, p.HostId, p.Resync))))
            .GroupBy(x => x.Primary, x => x.Job);
        var epoch = _map.Epoch;
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
}
