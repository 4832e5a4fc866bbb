namespace OrleansStorage.Storage;

/// <summary>
/// When a failed copy to a pending replica may start again: one second after the first failure,
/// doubling with each failure in a row up to <see cref="MaxDelay"/>, and at once after a success.
/// Without it, management's reconciliation restarted a copy that could not succeed (a target
/// whose disk is full) every second, forever.
/// </summary>
public sealed class CopyBackoff(TimeProvider clock)
{
    public static readonly TimeSpan FirstDelay = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(30);
    private readonly Dictionary<CopyJob, (int Failures, DateTimeOffset NotBefore)> _failed = [];

    public bool MayStart(CopyJob job) => !_failed.TryGetValue(job, out var failed) || clock.GetUtcNow() >= failed.NotBefore;

    /// <summary>Records a finished copy; returns how long the next attempt waits (zero after a success).</summary>
    public TimeSpan Finished(CopyJob job, bool succeeded)
    {
        if (succeeded)
        {
            _failed.Remove(job);
            return TimeSpan.Zero;
        }
        var failures = _failed.TryGetValue(job, out var failed) ? failed.Failures + 1 : 1;
        var delay = TimeSpan.FromTicks(Math.Min(MaxDelay.Ticks, FirstDelay.Ticks << Math.Min(failures - 1, 20)));
        _failed[job] = (failures, clock.GetUtcNow() + delay);
        return delay;
    }
}
