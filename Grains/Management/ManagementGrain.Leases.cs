using Orleans.Storage;
using OrleansStorage.Errors;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>
/// Primary leases: granted on the map the database still holds, or while a majority of the hosts
/// witness this activation (docs/failures.md, "Read leases" and "Leases without the database").
/// </summary>
public sealed partial class ManagementGrain
{
    public async Task<LeaseGrant> RenewLeaseAsync(LeaseRequest request)
    {
        if (_failure is not null)
        {
            throw new ManagementUnavailableException(_failure);
        }
        if (!_leases.Witnesses.Heard(request, _map) && _leases.Witnesses.FirstNewerGeneration())
        {
            Log.NewerManagementGeneration(logger, request.HostId, request.Generation, _leases.Witnesses.Generation);
        }
        if (!MayGrantOnWitnesses())
        {
            try
            {
                ThrowIfFailed();
                if (request.MapEpoch == _map.Epoch)
                {
                    // Not witnessed by a majority: an activation cut off from the database (or
                    // overtaken by another one) must not extend anybody's lease, so it grants only
                    // after reading that its map is still the one stored. The read starts after the
                    // request was sent, which is what the lease counts from.
                    await ConfirmMapIsStoredAsync();
                }
            }
            catch (ManagementUnavailableException ex) when (_failure is null)
            {
                // Refused with a stamp all the same: echoed, it counts towards the witnesses
                // that let this activation grant again while the database is away.
                return _leases.Refuse(_map, ex.Message);
            }
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
            // Nothing stored: no earlier activation granted a lease, and the first map written fences.
            _leases.Fenced(_state.State!.Generation, alone: true);
            return;
        }
        // The next generation: hosts that take this activation's grants stop witnessing older ones.
        _state.State!.Generation++;
        var writeStarted = _confirmation.Start();
        // Bounded: an activation whose fence gets no answer fails, rather than hold every renewal.
        await FromDatabaseAsync(async () =>
        {
            await _storage.WriteStateAsync(StateName, this.GetGrainId(), _state);
            return _state;
        }).WaitAsync(_confirmation.Limit * StepAsideAfterLimits);
        _confirmation.Proved(writeStarted);
        _leases.Fenced(_state.State.Generation);
    }

    /// <summary>
    /// Writes the state again with a generation past every one the hosts reported
    /// (<see cref="ActivationWitnesses.NewestHostGeneration"/>), so that they witness this
    /// activation. In the reconcile round, one at a time with map changes.
    /// </summary>
    private async Task CatchUpGenerationAsync()
    {
        var newest = _leases.Witnesses.NewestHostGeneration;
        if (newest == 0 || newest < _leases.Witnesses.Generation || _state.ETag is null)
        {
            return;
        }
        var before = _state.State!.Generation;
        _state.State.Generation = newest + 1;
        var writeStarted = _confirmation.Start();
        _writing = true; // a renewal's read may see the new ETag before this write returns
        try
        {
            await _storage.WriteStateAsync(StateName, this.GetGrainId(), _state).WaitAsync(_confirmation.Limit * StepAsideAfterLimits);
        }
        catch (InconsistentStateException)
        {
            _failure = "another activation changed the map; it is being reloaded, try again";
            DeactivateOnIdle();
            throw;
        }
        catch (Exception)
        {
            _state.State.Generation = before; // written or not, the next round tries again: generations only grow
            throw;
        }
        finally
        {
            _writing = false;
        }
        _confirmation.Proved(writeStarted);
        _leases.Fenced(_state.State.Generation);
        Log.ManagementGenerationRaised(logger, before, _state.State.Generation);
    }

    /// <summary>How long a host change or a snapshot waits for a new activation's witnesses before it is refused.</summary>
    private static readonly TimeSpan WitnessWait = TimeSpan.FromSeconds(3);

    private static readonly TimeSpan WitnessPoll = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Asks every host of the map to renew its lease now, so that a new activation hears from a
    /// majority (and bounds older leases) within a round trip or two rather than a renewal interval.
    /// A lost hint costs a host only its next renewal.
    /// </summary>
    private void AskHostsToRenew()
    {
        if (_leases.Witnesses.IsEstablished)
        {
            return;
        }
        foreach (var host in _map.Hosts)
        {
            GrainFactory.GetGrain<IStorageServerGrain>(host.HostId).LeaseReleasedAsync().Ignore();
        }
    }

    /// <summary>
    /// Whether a lease may be granted without reading the database: a majority of the map's hosts
    /// echoed this activation's grants within the witness window, and its last read of the database
    /// is less than <see cref="LeaseOptions.WitnessedGrantLimit"/> old (so that an activation that
    /// replaces it, and never hears from a majority, knows when its grants end).
    /// </summary>
    private bool MayGrantOnWitnesses() =>
        _failure is null && leaseOptions.Value.GrantsOnWitnesses
        && _leases.Witnesses.Witnessed(_map) && _confirmation.Age < leaseOptions.Value.WitnessedGrantLimit;

    /// <summary>
    /// Refuses a change that needs every earlier activation to have stopped granting: a change of
    /// the map's hosts (an earlier activation counts its witnesses among the hosts it knows, and two
    /// majorities meet only within one set) or a snapshot (its writers' pause must outlast every
    /// lease on the map before it). Both wait until a majority of hosts took this activation's grants,
    /// or (half the hosts lost) until no earlier activation may grant any more.
    /// </summary>
    private async Task RequireWitnessedAsync(string change)
    {
        // The hosts were asked to renew at activation: a majority normally answers within a
        // second or two, and renewals interleave with this wait.
        for (var waited = TimeSpan.Zero; !_leases.OlderActivationsSettled && waited < WitnessWait; waited += WitnessPoll)
        {
            await Task.Delay(WitnessPoll, clock);
        }
        if (!_leases.OlderActivationsSettled)
        {
            var fresh = _leases.Witnesses.Fresh(_map);
            throw new ManagementUnavailableException(
                $"{change} waits until a majority of the {_map.Hosts.Length} hosts has renewed its lease with this management activation (started {_activatedAt:HH:mm:ss} UTC; {fresh} so far); try again in a few seconds");
        }
    }

    private async Task ConfirmMapIsStoredAsync()
    {
        var etag = _state.ETag;
        var stored = new GrainState<ManagementState>(new ManagementState());
        var readStarted = _confirmation.Start();
        try
        {
            // Bounded: a read the database never answers (a partition drops its packets) must hold
            // neither a renewal nor the confirmation timer, nor this activation's deactivation.
            await FromDatabaseAsync(async () =>
            {
                await _storage.ReadStateAsync(StateName, this.GetGrainId(), stored);
                return stored;
            }).WaitAsync(_confirmation.Limit);
        }
        catch (TimeoutException)
        {
            throw new ManagementUnavailableException($"a read of the map got no answer within {_confirmation.Limit.TotalSeconds:0.#} s");
        }
        if (_unsettledWrite is { } unsettled && readStarted > _unsettledSince)
        {
            // The database answers again: a new activation loads what it holds, the failed write or not.
            _failure = unsettled;
            DeactivateOnIdle();
            ThrowIfFailed();
        }
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
