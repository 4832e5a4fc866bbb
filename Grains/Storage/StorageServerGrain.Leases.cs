using OrleansStorage.Errors;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
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

    private void StartLeases()
    {
        _lease = new PrimaryLease(_hostId, leaseOptions.Value, clock);
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
            var grant = await Management.RenewLeaseAsync(new(_hostId, map.Epoch));
            if (grant.Granted && grant.Epoch == map.Epoch)
            {
                _lease.Apply(grant, map, sentAt);
                return;
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
