namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A clock that moves only when told to, for code that takes a <see cref="TimeProvider"/>: its
/// wall clock (<see cref="Now"/>) and its monotonic timestamp (one tick per microsecond) move together.
/// </summary>
public sealed class ManualClock : TimeProvider
{
    public DateTimeOffset Now { get; set; } = new(2026, 11, 26, 0, 0, 0, TimeSpan.Zero);

    public long Ticks { get; private set; } = 1_000_000;

    public override long TimestampFrequency => 1_000_000;

    public override DateTimeOffset GetUtcNow() => Now;

    public override long GetTimestamp() => Ticks;

    public void Advance(TimeSpan span)
    {
        Now += span;
        Ticks += (long)(span.TotalSeconds * TimestampFrequency);
    }
}
