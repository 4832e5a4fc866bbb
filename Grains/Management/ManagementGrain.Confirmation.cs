using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>
/// Answering only for a map proved current (<see cref="MapConfirmation"/>). Every lease renewal
/// reads the stored ETag already; when none did for a quarter of the limit, a timer reads it. An
/// activation that cannot reach the database refuses maps, leases and changes once the limit has
/// passed, and answers again as soon as a read finds its map still stored. A short silence does not
/// deactivate it: if the whole database is down, no other activation can have replaced the map, and
/// this one keeps its leases and paused writers for when the database returns (issue 29). While a
/// majority of hosts witness it, it goes on granting leases, so block I/O goes on, for up to
/// Leases:WitnessedGrantLimit (docs/failures.md, "Leases without the database"). It steps aside
/// after three limits without a proof only once another host's silo reads the map while it still
/// cannot (it is cut off from the database alone, and only a new activation can move the map: mark
/// a dead host Down), or past that limit; while nobody reaches the database, nobody could replace it. A read that finds another activation's map
/// deactivates it at once, as before.
/// </summary>
public sealed partial class ManagementGrain
{
    private MapConfirmation _confirmation = null!;

    /// <summary>How many confirmation limits without a proof before this activation steps aside.</summary>
    private const int StepAsideAfterLimits = 3;

    /// <summary>Whether the refusal was logged, so that losing and regaining the database log once each.</summary>
    private bool _refusing;

    /// <summary>Why the last read of the stored map failed; null once one succeeds.</summary>
    private string? _lastDatabaseError;

    /// <summary>
    /// What status reports while the database does not answer (two confirmation periods without
    /// a proof: one missed read is not an outage), and what that stops; null while it answers.
    /// </summary>
    private string? DatabaseProblem(TimeSpan age, DateTimeOffset? lastReached)
    {
        if (age <= _confirmation.Limit / 2)
        {
            return null;
        }
        var since = lastReached is { } at ? $"has not answered for {age.TotalSeconds:0} s (last reached {at:HH:mm:ss} UTC)" : "has not answered since this activation started";
        var limit = leaseOptions.Value.WitnessedGrantLimit;
        var io = MayGrantOnWitnesses()
            ? $"block I/O goes on while a majority of hosts renew their leases here ({_leases.Witnesses.Fresh(_map)} of {_map.Hosts.Length} do), for at most {limit.TotalMinutes:0.#} min after it went away"
            : $"block I/O stops once primary leases run out ({leaseOptions.Value.Duration.TotalSeconds:0} s): {(age >= limit ? $"the {limit.TotalMinutes:0.#} min it may go on without the database have passed" : "too few hosts renew their leases here")}";
        return $"the database {since}: {_lastDatabaseError ?? "no answer yet"}. Until it is back, map changes wait (volumes, snapshots, grants, hosts marked down, recovery); {io}";
    }

    private void StartConfirming()
    {
        var period = _confirmation.Limit / 4;
        // Interleaved: a read the database does not answer must not hold up the calls that are refused meanwhile.
        this.RegisterGrainTimer(ConfirmAsync, new GrainTimerCreationOptions(period, period) { KeepAlive = true, Interleave = true });
    }

    private async Task ConfirmAsync(CancellationToken cancellationToken)
    {
        if (_failure is not null)
        {
            return;
        }
        if (_confirmation.IsDue)
        {
            try
            {
                await ConfirmMapIsStoredAsync();
                _lastDatabaseError = null;
            }
            catch (ManagementUnavailableException ex)
            {
                // Counted by the age of the last proof; logged below when it matters, and shown by status.
                _lastDatabaseError = ex.Message;
            }
        }
        var refusal = Unconfirmed();
        string? reachedBy = null;
        var stepAside = _confirmation.Age >= _confirmation.Limit * StepAsideAfterLimits
            && (_confirmation.Age >= leaseOptions.Value.WitnessedGrantLimit || (reachedBy = await HostReachingTheDatabaseAsync()) is not null);
        if (stepAside)
        {
            // Cut off from the database but not from the silos (or the database down for all):
            // refusing forever would keep every map change, a dead host's too, from happening
            // while the database may be reachable from elsewhere. A new activation (here or on
            // another silo) starts from the stored map, fenced, as after any failover.
            Log.ManagementUnconfirmed(logger, _map.Epoch, $"{refusal}; {(reachedBy is null ? "" : $"host '{reachedBy}' reads the map from the database; ")}stepping aside for a new activation");
            _failure = refusal ?? "the database did not confirm the map";
            DeactivateOnIdle();
            return;
        }
        if (refusal is not null && !_refusing)
        {
            Log.ManagementUnconfirmed(logger, _map.Epoch, refusal);
        }
        else if (refusal is null && _refusing)
        {
            Log.ManagementConfirmedAgain(logger, _map.Epoch);
        }
        _refusing = refusal is not null;
    }

    private long _lastDatabaseProbe = long.MinValue;

    /// <summary>
    /// A host whose silo reads the map from the database while this activation cannot, asked at
    /// most once per confirmation limit; null when none does (the database is down for everyone,
    /// and this activation goes on granting leases on its witnesses).
    /// </summary>
    private async Task<string?> HostReachingTheDatabaseAsync()
    {
        if (_lastDatabaseProbe != long.MinValue && clock.GetElapsedTime(_lastDatabaseProbe) < _confirmation.Limit)
        {
            return null;
        }
        _lastDatabaseProbe = clock.GetTimestamp();
        var hosts = _map.Hosts.Where(h => h.State == HostState.Up && h.HostId != LocalHostId).Select(h => h.HostId).ToList();
        var answers = await Task.WhenAll(hosts.Select(async hostId =>
        {
            try
            {
                return await GrainFactory.GetGrain<IStorageServerGrain>(hostId).ReachesDatabaseAsync().WaitAsync(CallTimeout) ? hostId : null;
            }
            catch (Exception)
            {
                return null; // an unreachable host tells nothing either way
            }
        }));
        if (answers.FirstOrDefault(a => a is not null) is not { } reached)
        {
            return null;
        }
        try
        {
            // The database may have come back for this activation too (a pooled connection slow to
            // notice): then it stays, rather than cost a failover at the end of every outage.
            await ConfirmMapIsStoredAsync();
            _lastDatabaseError = null;
            return null;
        }
        catch (ManagementUnavailableException)
        {
            return reached;
        }
    }

    /// <summary>Why this activation must not answer for its map now; null while it may.</summary>
    private string? Unconfirmed() => _confirmation.Refusal(_map, LocalHostId is { Length: > 0 } host ? $"host '{host}'" : $"silo {silo.SiloAddress}");
}
