namespace OrleansStorage.Storage;

/// <summary>
/// Paces a stream of transfers to a byte rate shared by all its users: each transfer books the
/// time its bytes take at that rate after the previous bookings, and waits for its slot if it
/// would run ahead. A burst of up to 50 ms of bytes goes through unpaced.
/// </summary>
public sealed class BandwidthLimiter(long bytesPerSecond, TimeProvider time)
{
    private readonly Lock _gate = new();
    private long _nextFreeTicks;

    public ValueTask WaitAsync(long bytes, CancellationToken cancellationToken = default)
    {
        if (bytes <= 0)
        {
            return ValueTask.CompletedTask;
        }
        var cost = TimeSpan.FromSeconds((double)bytes / bytesPerSecond).Ticks;
        var burst = TimeSpan.FromMilliseconds(50).Ticks;
        long wait;
        lock (_gate)
        {
            var now = time.GetUtcNow().UtcTicks;
            _nextFreeTicks = Math.Max(_nextFreeTicks, now - burst) + cost;
            wait = _nextFreeTicks - now - burst;
        }
        return wait <= 0 ? ValueTask.CompletedTask : new ValueTask(Task.Delay(TimeSpan.FromTicks(wait), time, cancellationToken));
    }
}
