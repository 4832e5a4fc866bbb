using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class BandwidthLimiterTests
{
    [Fact]
    public void Bookings_are_paced_to_the_rate_after_a_small_burst()
    {
        var clock = new ManualClock();
        var limiter = new BandwidthLimiter(16 << 20, clock);

        // 1 MiB at 16 MiB/s costs 62.5 ms, of which the burst forgives 50.
        Assert.Equal(TimeSpan.FromMilliseconds(12.5), limiter.Reserve(1 << 20));
        var waits = Enumerable.Range(0, 63).Select(_ => limiter.Reserve(1 << 20)).ToList();
        // 64 MiB booked at one instant: the last booking ends 4 s (64 / 16) from now, and may go a burst before that.
        Assert.Equal(TimeSpan.FromSeconds(4) - BandwidthLimiter.Burst, waits[^1]);
        Assert.Equal(waits.Order(), waits); // never earlier than the booking before it
    }

    [Fact]
    public void An_idle_limiter_does_not_save_up_more_than_the_burst()
    {
        var clock = new ManualClock();
        var limiter = new BandwidthLimiter(16 << 20, clock);
        clock.Now += TimeSpan.FromMinutes(5);
        Assert.Equal(TimeSpan.Zero, limiter.Reserve(512 << 10));
        // 512 KiB booked 31.25 ms; 4 MiB more ends at 281.25 ms: five idle minutes bought nothing.
        Assert.Equal(TimeSpan.FromMilliseconds(281.25) - BandwidthLimiter.Burst, limiter.Reserve(4 << 20));
        Assert.Equal(TimeSpan.Zero, limiter.Reserve(0));
    }
}
