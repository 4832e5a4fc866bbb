using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class CopyBackoffTests
{
    private static readonly CopyJob Job = new(Guid.NewGuid(), 3, "host-2", Resync: true);

    [Fact]
    public void A_failing_copy_waits_twice_as_long_each_time_up_to_the_bound_and_at_once_after_a_success()
    {
        var clock = new ManualClock();
        var backoff = new CopyBackoff(clock);
        Assert.True(backoff.MayStart(Job));

        var delays = Enumerable.Range(0, 8).Select(_ => backoff.Finished(Job, succeeded: false).TotalSeconds).ToList();
        Assert.Equal([1, 2, 4, 8, 16, 30, 30, 30], delays);
        Assert.False(backoff.MayStart(Job));
        clock.Now += TimeSpan.FromSeconds(29);
        Assert.False(backoff.MayStart(Job));
        clock.Now += TimeSpan.FromSeconds(1);
        Assert.True(backoff.MayStart(Job));
        Assert.True(backoff.MayStart(Job with { TargetHostId = "host-3" })); // other jobs are not held back

        Assert.Equal(TimeSpan.Zero, backoff.Finished(Job, succeeded: true));
        Assert.Equal(1, backoff.Finished(Job, succeeded: false).TotalSeconds); // a new run of failures starts over
    }
}
