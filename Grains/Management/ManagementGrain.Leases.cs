using Orleans.Storage;
using OrleansStorage.Errors;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>Primary leases: granted only on the map the database still holds (docs/failures.md, "Read leases").</summary>
public sealed partial class ManagementGrain
{
    public async Task<LeaseGrant> RenewLeaseAsync(LeaseRequest request)
    {
        ThrowIfFailed();
        if (request.MapEpoch == _map.Epoch)
        {
            // An activation cut off from the database (or overtaken by another one) must not
            // extend anybody's lease: it grants only after reading that its map is still the one
            // stored. The read starts after the request was sent, which is what the lease counts from.
            await ConfirmMapIsStoredAsync();
        }
        var grant = _leases.Grant(request, _map);
        foreach (var leader in _leases.TakeReleased(_map))
        {
            if (leader != request.HostId)
            {
                // A lost hint costs the leader only its next renewal.
                GrainFactory.GetGrain<IStorageServerGrain>(leader).LeaseReleasedAsync().Ignore();
            }
        }
        return grant;
    }

    /// <summary>
    /// Takes over from any other activation (Orleans may run two for a moment while membership
    /// settles): writing the unchanged state moves its etag, so an activation that loaded it
    /// before can neither change the map nor grant a lease from now on, and the leases it granted
    /// end within one lease. Nothing stored yet: nothing to lead, and the first map written fences.
    /// </summary>
    private async Task FenceAsync()
    {
        if (_state.ETag is null)
        {
            return;
        }
        var writeStarted = _confirmation.Start();
        await FromDatabaseAsync(async () =>
        {
            await _storage.WriteStateAsync(StateName, this.GetGrainId(), _state);
            return _state;
        });
        _confirmation.Proved(writeStarted);
        _leases.Fenced();
    }

    private async Task ConfirmMapIsStoredAsync()
    {
        var etag = _state.ETag;
        var stored = new GrainState<ManagementState>(new ManagementState());
        var readStarted = _confirmation.Start();
        await FromDatabaseAsync(async () =>
        {
            await _storage.ReadStateAsync(StateName, this.GetGrainId(), stored);
            return stored;
        });
        if (stored.ETag == etag || stored.ETag == _state.ETag)
        {
            _confirmation.Proved(readStarted);
            return;
        }
        if (_writing)
        {
            throw new ManagementUnavailableException("the map is being changed; ask again");
        }
        _failure = "another activation changed the map; it is being reloaded, try again";
        Log.ManagementOvertaken(logger, _map.Epoch, stored.State?.Map?.Epoch ?? 0);
        DeactivateOnIdle();
        ThrowIfFailed();
    }
}
