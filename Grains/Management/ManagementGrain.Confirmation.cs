using OrleansStorage.Errors;
using OrleansStorage.Logging;

namespace OrleansStorage.Management;

/// <summary>
/// Answering only for a map proved current (<see cref="MapConfirmation"/>). Every lease renewal
/// reads the stored ETag already; when none did for a quarter of the limit, a timer reads it. An
/// activation that cannot reach the database refuses maps, leases and changes once the limit has
/// passed, and answers again as soon as a read finds its map still stored. A short silence does not
/// deactivate it: if the whole database is down, no other activation can have replaced the map, and
/// this one keeps its leases and paused writers for when the database returns (issue 29). After
/// three limits without a proof it steps aside all the same: it may be cut off from the database
/// alone while the silos and the database still reach each other, and then only a new activation
/// can move the map (mark a dead host Down). A read that finds another activation's map
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
        return $"the database {since}: {_lastDatabaseError ?? "no answer yet"}. Until it is back, map changes wait (volumes, snapshots, grants, hosts marked down, recovery), "
            + $"and block I/O stops once primary leases cannot be renewed ({leaseOptions.Value.Duration.TotalSeconds:0} s after it went away)";
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
        if (_confirmation.Age >= _confirmation.Limit * StepAsideAfterLimits)
        {
            // Cut off from the database but not from the silos (or the database down for all):
            // refusing forever would keep every map change, a dead host's too, from happening
            // while the database may be reachable from elsewhere. A new activation (here or on
            // another silo) starts from the stored map, fenced, as after any failover.
            Log.ManagementUnconfirmed(logger, _map.Epoch, $"{refusal}; stepping aside for a new activation");
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

    /// <summary>Why this activation must not answer for its map now; null while it may.</summary>
    private string? Unconfirmed() => _confirmation.Refusal(_map, LocalHostId is { Length: > 0 } host ? $"host '{host}'" : $"silo {silo.SiloAddress}");
}
