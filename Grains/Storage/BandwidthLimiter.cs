namespace OrleansStorage.Storage;

/// <summary>
/// Paces a stream of transfers to a byte rate shared by all its users: each transfer books the
/// time its bytes take at that rate right after the previous bookings (or now, if idle), and
/// waits until its booking ends no more than <see cref="Burst"/> from now. Idle time is not saved up.
/// </summary>
public sealed class BandwidthLimiter(long bytesPerSecond, TimeProvider time)
{
    private readonly Lock _gate = new();
    private long _nextFreeTicks;

    public static readonly TimeSpan Burst = TimeSpan.FromMilliseconds(50);

    public ValueTask WaitAsync(long bytes, CancellationToken cancellationToken = default)
    {
        var wait = Reserve(bytes);
        return wait <= TimeSpan.Zero ? ValueTask.CompletedTask : new ValueTask(Task.Delay(wait, time, cancellationToken));
    }

    /// <summary>Books <paramref name="bytes"/> and returns how long the caller must wait before sending them.</summary>
    public TimeSpan Reserve(long bytes)
    {
        if (bytes <= 0)
        {
            return TimeSpan.Zero;
        }
        var cost = TimeSpan.FromSeconds((double)bytes / bytesPerSecond).Ticks;
        lock (_gate)
        {
            var now = time.GetUtcNow().UtcTicks;
            _nextFreeTicks = Math.Max(_nextFreeTicks, now) + cost;
            return TimeSpan.FromTicks(Math.Max(0, _nextFreeTicks - now - Burst.Ticks));
        }
    }
}
