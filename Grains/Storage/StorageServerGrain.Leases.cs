using Microsoft.Extensions.DependencyInjection;
using Orleans.Storage;
using OrleansStorage.Errors;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
using OrleansStorage.Management;
using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

/// <summary>
/// The primary lease: client reads and writes are served only while this host holds a lease for
/// the epoch of its map, granted by the management service, and only once every earlier primary of
/// the group has run out of its own (docs/failures.md, "Read leases"). A timer renews it; a map
/// change renews it at once, which also tells management that this host no longer serves the
/// epochs before.
/// </summary>
public sealed partial class StorageServerGrain
{
    /// <summary>The longest a request waits inside the server for its group to become servable; beyond it the client retries.</summary>
    private static readonly TimeSpan LongestLeaseWait = TimeSpan.FromSeconds(1);

    private PrimaryLease _lease = null!;
    private Task _leaseRenewal = Task.CompletedTask;
    private long _leaseRenewalEpoch = -1;
    private bool _leaseLost;

    public Task LeaseReleasedAsync()
    {
        // Renew on our own map even when a renewal is in flight: that one may have been answered
        // before the release.
        _leaseRenewalEpoch = -1;
        RenewLeaseAsync().Ignore();
        return Task.CompletedTask;
    }

    public async Task<bool> ReachesDatabaseAsync()
    {
        var storage = ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.ClusterStore);
        var management = GrainFactory.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey).GetGrainId();
        try
        {
            await storage.ReadStateAsync(ManagementGrain.StateName, management, new GrainState<ManagementState>(new ManagementState())).WaitAsync(DatabaseProbeTimeout);
            return true;
        }
        catch (Exception)
        {
            return false; // which failure it was does not matter: the asker only counts the hosts that got an answer
        }
    }

    /// <summary>How long a host tries to read the map for a management activation that cannot.</summary>
    private static readonly TimeSpan DatabaseProbeTimeout = TimeSpan.FromSeconds(2);

    private void StartLeases()
    {
        _lease = new PrimaryLease(_hostId, leaseOptions.Value, clock);
        _lease.Restore(disk.LoadLeaseGeneration());
        var every = leaseOptions.Value.RenewInterval;
        this.RegisterGrainTimer(() => RenewLeaseAsync(), new GrainTimerCreationOptions(every, every) { Interleave = true, KeepAlive = true });
    }

    /// <summary>
    /// Renews the lease, sharing a renewal in flight unless that one was sent on an older map (then
    /// another follows it, so that management hears of the newer map promptly). Never throws: a
    /// failed renewal is logged once, and the lease runs out on its own.
    /// </summary>
    private Task RenewLeaseAsync()
    {
        if (!_leaseRenewal.IsCompleted && _leaseRenewalEpoch >= _map.Epoch)
        {
            return _leaseRenewal;
        }
        var previous = _leaseRenewal;
        _leaseRenewalEpoch = _map.Epoch;
        return _leaseRenewal = RenewAfterAsync(previous);

        async Task RenewAfterAsync(Task before)
        {
            await before;
            try
            {
                await RenewOnceAsync();
                if (_leaseLost)
                {
                    _leaseLost = false;
                    Log.LeaseRegained(logger, _hostId, _map.Epoch);
                }
            }
            catch (Exception ex)
            {
                if (!_leaseLost)
                {
                    _leaseLost = true;
                    Log.LeaseRenewalFailed(logger, ex, _hostId, _map.Epoch);
                }
            }
        }
    }

    private async Task RenewOnceAsync()
    {
        // A grant on a newer map sends us to catch up, then to ask again; the map rarely moves
        // twice in a row, and the timer tries again anyway.
        for (var round = 0; round < 3; round++)
        {
            var map = _map;
            var sentAt = _lease.Now();
            var grant = await Management.RenewLeaseAsync(_lease.Request(map.Epoch));
            var echo = KeepGeneration(grant);
            var newGrantor = grant.Grantor != _lease.LastGrantor;
            if (grant.Granted && grant.Epoch == map.Epoch)
            {
                _lease.Apply(grant, map, sentAt, echo);
                if (newGrantor && echo)
                {
                    // A new management activation: echo it at once rather than a renewal from now,
                    // so that it hears from a majority, and bounds older leases, sooner.
                    LeaseReleasedAsync().Ignore();
                }
                return;
            }
            if (echo)
            {
                _lease.Heard(grant);
            }
            if (grant.Refusal is { } refusal)
            {
                throw new ManagementUnavailableException(refusal);
            }
            if (grant.Epoch <= _map.Epoch || !await pushFilter.AcceptAsync(_hostId, grant.Epoch))
            {
                // We moved on meanwhile (the next renewal asks on our map), management is behind
                // us, or (tests) the news is dropped: no lease.
                return;
            }
            await CatchUpAsync(grant.Epoch, MapTrigger.Lease);
        }
    }

    /// <summary>
    /// Keeps a newer management generation on disk before this host echoes it: restarted, the
    /// host must never witness an activation it has seen replaced (docs/failures.md, "Leases
    /// without the database"). False when it could not: the answer is then not echoed (a lease
    /// it grants is still held), and the next answer tries again.
    /// </summary>
    private bool KeepGeneration(LeaseGrant answer)
    {
        if (answer.Generation <= _lease.Generation)
        {
            return true;
        }
        try
        {
            disk.SaveLeaseGeneration(answer.Generation);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Log.LeaseGenerationNotKept(logger, ex, _hostId, answer.Generation);
            return false;
        }
    }

    /// <summary>
    /// Whether this host may serve the group as primary now, without waiting: what every client
    /// read and write checks after its epoch, on the hot path (a clock read and a lookup).
    /// </summary>
    private bool MayLead(VolumeInfo volume, PlacementGroup group) =>
        _lease.WaitBeforeServing(_map, volume.VolumeId, group.Index) == TimeSpan.Zero;

    /// <summary>
    /// Waits until this host may lead the group at <paramref name="requestEpoch"/>: renews a
    /// missing lease, or waits a short while for an earlier primary's to run out; past that the
    /// request fails with <see cref="PrimaryLeaseException"/> and the client retries. Returns early
    /// when the map moved on: the caller's re-admission then rejects the request.
    /// </summary>
    private async ValueTask HoldLeaseAsync(long requestEpoch, VolumeInfo volume, PlacementGroup group)
    {
        var waited = false;
        var renewed = false;
        while (_map.Epoch == requestEpoch)
        {
            var wait = _lease.WaitBeforeServing(_map, volume.VolumeId, group.Index);
            if (wait == TimeSpan.Zero)
            {
                return;
            }
            if (wait is null && !renewed)
            {
                renewed = true;
                await RenewLeaseAsync().WaitAsync(LongestLeaseWait).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ContinueOnCapturedContext);
                continue;
            }
            if (wait is { } remaining && remaining <= LongestLeaseWait && !waited)
            {
                waited = true;
                await Task.Delay(remaining);
                continue;
            }
            throw NoLease(_map.Epoch, volume, group);
        }
    }

    private PrimaryLeaseException NoLease(long epoch, VolumeInfo volume, PlacementGroup group) =>
        _lease.WaitBeforeServing(_map, volume.VolumeId, group.Index) is { } remaining
            ? new PrimaryLeaseException(_hostId, epoch, $"an earlier primary of placement group {group.Index} of volume '{volume.Name}' may still serve for {remaining.TotalMilliseconds:0} ms")
            : new PrimaryLeaseException(_hostId, epoch, "the management service has not renewed it");
}
