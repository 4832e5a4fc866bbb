using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.History;
using Xunit;
using static OrleansStorage.Tests.Chaos.HistoryBuilder;

namespace OrleansStorage.Tests.Chaos;

/// <summary>
/// infra/chaos's checkers across a power cut of every host (at 10 s here): an acknowledged write
/// that no flush covered may be lost, a flushed one never; after the cut the block is one register
/// again, starting from the one value that survived.
/// </summary>
public sealed class PowerCutCheckerTests
{
    // Every host gone at 10 s; the first being started again at 11 s.
    private static readonly PowerCut[] CutAt10 = [new(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(11))];

    private static List<Anomaly> CheckAll(HistoryBuilder history, params int[] blocks) =>
        [.. RegisterChecker.Check(history.Operations, CutAt10), .. DurabilityChecker.Check(history.Operations, blocks, CutAt10)];

    [Fact]
    public void An_unflushed_write_lost_by_the_cut_is_no_anomaly_but_the_same_history_without_a_cut_is()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Flush(1, 2.0, 3.0)
            .Write(V(1, 2), 0, 4.0, 5.0)          // acknowledged, never flushed
            .Read(0, 6.0, 7.0, V(1, 2))
            .Read(0, 12.0, 13.0, V(1, 1))         // after the cut: the flushed value is back
            .Write(V(2, 1), 0, 14.0, 15.0)
            .Read(0, 16.0, 17.0, V(2, 1), final: true);

        Assert.Empty(CheckAll(history, 0));
        Assert.Contains(RegisterChecker.Check(history.Operations), a => a.Kind == "stale read");
    }

    [Fact]
    public void A_flushed_write_lost_by_the_cut_is_a_lost_flushed_write()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 0, 2.0, 3.0)
            .Flush(1, 4.0, 5.0)                   // covers c1#2
            .Read(0, 12.0, 13.0, V(1, 1))         // after the cut: an older value
            .Write(V(2, 1), 0, 14.0, 15.0)
            .Read(0, 16.0, 17.0, V(2, 1), final: true);

        var anomaly = Assert.Single(CheckAll(history, 0));
        Assert.Equal("lost flushed write", anomaly.Kind);
        Assert.Contains("c1#2", anomaly.Explanation);
        Assert.Contains("power cut", anomaly.Explanation);
    }

    [Fact]
    public void Two_values_from_before_the_cut_read_after_it_is_a_stale_read()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 0, 2.0, 3.0)
            .Read(0, 12.0, 13.0, V(1, 2))         // what survived ...
            .Read(0, 14.0, 15.0, V(1, 1), final: true); // ... and then another value from before it

        var anomaly = Assert.Single(CheckAll(history, 0));
        Assert.Equal("stale read", anomaly.Kind);
        Assert.Contains("survived", anomaly.Explanation);
    }

    [Fact]
    public void A_write_running_at_the_cut_may_be_lost_or_land_after_it()
    {
        var lost = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 0, 9.0, 20.0)         // acknowledged after the restart: sent again
            .Read(0, 12.0, 13.0, V(1, 1))         // not yet there after the cut ...
            .Read(0, 21.0, 22.0, V(1, 2), final: true); // ... then it landed
        Assert.Empty(CheckAll(lost, 0));

        var failedBefore = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 0, 2.0, 3.0, Outcome.Failed) // failed before the cut: it may have landed before it, never after
            .Read(0, 12.0, 13.0, V(1, 1))
            .Read(0, 14.0, 15.0, V(1, 2), final: true);
        Assert.Contains(CheckAll(failedBefore, 0), a => a.Kind == "stale read");
    }

    [Fact]
    public void Answers_recorded_between_the_cut_and_the_restart_were_given_before_the_cut()
    {
        // Each host's process was gone at 10 s and none ran again before 11 s: a write and a read
        // the client noted at 10.05 s were answered before the cut. The write was never flushed,
        // so the cut may take it, and the read may have seen it before.
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Flush(1, 1.5, 2.0)
            .Write(V(1, 2), 0, 9.9, 10.05)
            .Read(0, 9.95, 10.05, V(1, 2))
            .Read(0, 12.0, 13.0, V(1, 1), final: true);

        Assert.Empty(CheckAll(history, 0));
    }

    [Fact]
    public void A_flush_after_the_cut_does_not_cover_a_write_the_cut_took()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)          // acknowledged, never flushed before the cut
            .Flush(1, 20.0, 21.0)                 // flushes what there is after the restart
            .ReadZeros(0, 22.0, 23.0, final: true);

        Assert.Empty(CheckAll(history, 0));
    }

    [Fact]
    public void A_snapshot_may_lack_a_write_the_cut_took_but_not_a_flushed_one()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Flush(1, 1.5, 2.0)
            .Write(V(1, 2), 0, 3.0, 4.0)          // acknowledged, never flushed
            .Write(V(1, 3), 1, 3.0, 4.0)          // acknowledged, never flushed
            .Snapshot("s1", 5.0, 6.0)
            .ReadSnapshot("s1", 0, 20.0, 20.1, V(1, 1))
            .ReadSnapshot("s1", 1, 20.0, 20.1, null);
        Assert.Empty(SnapshotChecker.Check(history.Operations, _ => 0, CutAt10));

        var lostFlushed = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Flush(1, 1.5, 2.0)
            .Snapshot("s1", 5.0, 6.0)
            .ReadSnapshot("s1", 0, 20.0, 20.1, null);
        Assert.Equal("snapshot wrong", Assert.Single(SnapshotChecker.Check(lostFlushed.Operations, _ => 0, CutAt10)).Kind);
    }
}
