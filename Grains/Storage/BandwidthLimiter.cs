namespace OrleansStorage.Storage;

/// <summary>
/// Paces a stream of transfers to a rate shared by all its users (bytes, or operations: any
/// unit): each transfer books the time its units take at that rate right after the previous
/// bookings (or now, if idle), and waits until its booking ends no more than the burst from now.
/// Idle time is not saved up beyond the burst. Exact over time: a late wake-up delays no later
/// booking, unlike a bucket refilled by a timer tick.
/// </summary>
public sealed class BandwidthLimiter(double unitsPerSecond, TimeProvider time, TimeSpan? burst = null)
{
    private readonly Lock _gate = new();
    private readonly long _burstTicks = (burst ?? Burst).Ticks;
    private long _nextFreeTicks;

    /// <summary>The default burst: recovery and scrub copies.</summary>
    public static readonly TimeSpan Burst = TimeSpan.FromMilliseconds(50);

    public ValueTask WaitAsync(long bytes, CancellationToken cancellationToken = default)
    {
        var wait = Reserve(bytes);
        return wait <= TimeSpan.Zero ? ValueTask.CompletedTask : new ValueTask(Task.Delay(wait, time, cancellationToken));
    }

    /// <summary>
    /// Books <paramref name="units"/> to start once the bookings before them are done, unless
    /// those reach more than <paramref name="maxBacklog"/> past now (then nothing is booked and
    /// false is returned). <paramref name="wait"/>: how long until the booking starts, less the
    /// burst — a request waits for the ones before it, not for its own size, so a large request
    /// under a small limit is not held past its caller's timeout.
    /// </summary>
    public bool TryBook(double units, TimeSpan maxBacklog, out TimeSpan wait)
    {
        var cost = TimeSpan.FromSeconds(units / unitsPerSecond).Ticks;
        lock (_gate)
        {
            var now = time.GetUtcNow().UtcTicks;
            var start = Math.Max(_nextFreeTicks, now);
            if (start - now > maxBacklog.Ticks)
            {
                wait = TimeSpan.FromTicks(start - now - maxBacklog.Ticks);
                return false;
            }
            _nextFreeTicks = start + cost;
            wait = TimeSpan.FromTicks(Math.Max(0, start - now - _burstTicks));
            return true;
        }
    }

    /// <summary>Books <paramref name="bytes"/> and returns how long the caller must wait before sending them.</summary>
    public TimeSpan Reserve(long bytes)
    {
        if (bytes <= 0)
        {
            return TimeSpan.Zero;
        }
        var cost = TimeSpan.FromSeconds(bytes / unitsPerSecond).Ticks;
        lock (_gate)
        {
            var now = time.GetUtcNow().UtcTicks;
            _nextFreeTicks = Math.Max(_nextFreeTicks, now) + cost;
            return TimeSpan.FromTicks(Math.Max(0, _nextFreeTicks - now - _burstTicks));
        }
    }
}
