using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.History;
using Xunit;
using static OrleansStorage.Tests.Chaos.HistoryBuilder;

namespace OrleansStorage.Tests.Chaos;

/// <summary>infra/chaos's snapshot check: a snapshot holds every write acknowledged before its create was called and none invoked after it returned.</summary>
public sealed class SnapshotCheckerTests
{
    private static List<Anomaly> Check(HistoryBuilder history) => SnapshotChecker.Check(history.Operations, _ => 0);

    [Fact]
    public void A_snapshot_with_the_acknowledged_writes_and_any_of_the_concurrent_ones_is_right()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 1, 0.0, 1.0)
            .Write(V(2, 1), 1, 1.5, 2.5)                    // concurrent with the create: may be in
            .Write(V(3, 1), 2, 1.0, 1.8, Outcome.Failed)    // ambiguous: may be in
            .Snapshot("s1", 2.0, 3.0)
            .Write(V(1, 3), 0, 3.5, 4.0)                    // after: must not be in
            .ReadSnapshot("s1", 0, 10.0, 10.1, V(1, 1))
            .ReadSnapshot("s1", 1, 10.0, 10.1, V(2, 1))
            .ReadSnapshot("s1", 2, 10.0, 10.1, V(3, 1))
            .ReadSnapshot("s1", 3, 10.0, 10.1, null);       // never written

        Assert.Empty(Check(history));
    }

    [Fact]
    public void A_snapshot_that_lacks_a_write_acknowledged_before_its_create_is_wrong()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 0, 1.1, 1.5)
            .Write(V(2, 1), 1, 0.0, 1.0)
            .Snapshot("s1", 2.0, 3.0)
            .ReadSnapshot("s1", 0, 10.0, 10.1, V(1, 1))     // c1#2 missing
            .ReadSnapshot("s1", 1, 10.0, 10.1, null);       // c2#1 missing

        var anomalies = Check(history);
        Assert.Equal(2, anomalies.Count);
        Assert.All(anomalies, a => Assert.Equal("snapshot wrong", a.Kind));
        Assert.Contains("c1#2", anomalies[0].Explanation);
        Assert.Contains("zeros", anomalies[1].Explanation);
    }

    [Fact]
    public void A_snapshot_that_holds_a_write_invoked_after_its_create_returned_is_wrong()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Snapshot("s1", 2.0, 3.0)
            .Write(V(1, 2), 0, 3.5, 4.0, Outcome.Failed)    // ambiguous, but invoked after: never in
            .ReadSnapshot("s1", 0, 10.0, 10.1, V(1, 2));

        Assert.Contains("after the create returned", Assert.Single(Check(history)).Explanation);
    }
}
