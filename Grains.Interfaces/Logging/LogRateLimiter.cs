namespace OrleansStorage.Logging;

/// <summary>
/// Lets one log line through per interval and counts the rest, so what a remote party can
/// trigger at will (a refused handshake, a rejected request) cannot flood the log: the next line
/// that passes says how many were held back.
/// </summary>
public sealed class LogRateLimiter(TimeSpan interval, TimeProvider? time = null)
{
    /// <summary>How often a refusal that others can cause at will is logged: once per 10 s, with the count held back.</summary>
    public static readonly TimeSpan RefusalInterval = TimeSpan.FromSeconds(10);

    /// <summary>For refusals (<see cref="RefusalInterval"/>).</summary>
    public static LogRateLimiter ForRefusals() => new(RefusalInterval);

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Lock _lock = new();
    private long _nextAllowed = long.MinValue;
    private long _suppressed;

    /// <summary>True when this event may be logged; <paramref name="suppressed"/> is how many were not since the last one that was.</summary>
    public bool TryEnter(out long suppressed)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (now < _nextAllowed)
            {
                _suppressed++;
                suppressed = 0;
                return false;
            }
            _nextAllowed = now + (long)(interval.TotalSeconds * _time.TimestampFrequency);
            suppressed = _suppressed;
            _suppressed = 0;
            return true;
        }
    }
}
