using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class MapConfirmationTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(8);
    private static readonly ClusterMap Map = ClusterMap.Empty with { Epoch = 106 };

    [Fact]
    public void Answers_within_the_limit_of_the_last_proof_and_refuses_after_it()
    {
        var clock = new ManualClock();
        var confirmation = new MapConfirmation(clock, Limit);
        confirmation.Proved(confirmation.Start());
        clock.Advance(Limit);
        Assert.Null(confirmation.Refusal(Map, "host 'host-2'"));
        clock.Advance(TimeSpan.FromMilliseconds(1));
        var refusal = confirmation.Refusal(Map, "host 'host-2'");
        Assert.NotNull(refusal);
        Assert.Contains("host 'host-2' has not reached the database for 8.0 s", refusal, StringComparison.Ordinal);
        Assert.Contains("epoch 106", refusal, StringComparison.Ordinal);
    }

    [Fact]
    public void Refuses_before_any_proof()
    {
        var confirmation = new MapConfirmation(new ManualClock(), Limit);
        Assert.Contains("never reached the database", confirmation.Refusal(Map, "host 'host-2'"), StringComparison.Ordinal);
        Assert.True(confirmation.IsDue);
    }

    [Fact]
    public void A_proof_counts_from_when_its_read_started_and_a_late_older_one_does_not_move_it_back()
    {
        var clock = new ManualClock();
        var confirmation = new MapConfirmation(clock, Limit);
        var slowRead = confirmation.Start();
        clock.Advance(TimeSpan.FromSeconds(5));
        var quickRead = confirmation.Start();
        confirmation.Proved(quickRead);
        confirmation.Proved(slowRead); // answered last, started first
        Assert.Equal(TimeSpan.Zero, confirmation.Age);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.False(confirmation.IsDue);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.True(confirmation.IsDue); // a quarter of the limit
    }
}
