using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.History;
using Xunit;
using static OrleansStorage.Tests.Chaos.HistoryBuilder;

namespace OrleansStorage.Tests.Chaos;

/// <summary>
/// The checker of infra/chaos on histories written by hand: it finds a stale read, a lost write, a
/// lost flushed write and a garbled value, and it passes correct histories full of concurrency
/// and ambiguous writes (a checker that cries wolf is as useless as one that never barks).
/// </summary>
public sealed class HistoryCheckerTests
{
    private static List<Anomaly> CheckAll(HistoryBuilder history, params int[] blocks) =>
        [.. RegisterChecker.Check(history.Operations), .. DurabilityChecker.Check(history.Operations, blocks)];

    [Fact]
    public void A_correct_history_with_ambiguous_and_concurrent_writes_has_no_anomaly()
    {
        var history = new HistoryBuilder()
            .ReadZeros(0, 0.0, 0.5)                       // concurrent with the first write: zeros still fine
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Read(0, 0.2, 0.6, V(1, 1))                   // and the new value too, in the same window
            .Read(0, 2.0, 3.0, V(1, 1))
            .Flush(1, 3.5, 3.8)
            .Write(V(2, 1), 0, 4.0, 5.0, Outcome.Failed)  // ambiguous: not seen yet ...
            .Read(0, 6.0, 7.0, V(1, 1))
            .Read(0, 8.0, 9.0, V(2, 1))                   // ... then it took effect after its error
            .Write(V(3, 1), 0, 8.5, 9.5, Outcome.TimedOut) // ambiguous and never seen: it may never have happened
            .Read(0, 10.0, 11.0, V(2, 1))
            .Write(V(1, 2), 0, 12.0, 20.0)                // long and concurrent with reads
            .Write(V(2, 2), 0, 12.5, 19.0)
            .Read(0, 13.0, 14.0, V(2, 1))
            .Read(0, 15.0, 16.0, V(2, 2))                 // V(2,2) first ...
            .Read(0, 17.0, 18.0, V(1, 2))                 // ... then V(1,2): a legal order
            .FailedRead(0, 18.5, 30.0)                    // failed reads say nothing
            .Read(0, 21.0, 21.5, V(1, 2), final: true)
            .Write(V(4, 1), 1, 0.0, 1.0)
            .Flush(4, 2.0, 2.5)
            .Write(V(4, 2), 1, 3.0, 4.0)
            .Read(1, 21.0, 21.5, V(4, 2), final: true);   // the flushed write superseded: kept

        Assert.Empty(CheckAll(history, 0, 1));
    }

    [Fact]
    public void A_read_of_an_older_value_after_a_newer_one_was_acknowledged_is_a_stale_read()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(2, 1), 0, 2.0, 3.0)
            .Read(0, 4.0, 5.0, V(1, 1))
            .Read(0, 6.0, 7.0, V(2, 1), final: true);

        var anomaly = Assert.Single(CheckAll(history, 0));
        Assert.Equal("stale read", anomaly.Kind);
        Assert.Equal(0, anomaly.Block);
        Assert.Contains("c1#1", anomaly.Explanation);
    }

    [Fact]
    public void Two_values_each_read_after_the_other_was_read_is_a_stale_read()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 10.0)
            .Write(V(2, 1), 0, 0.0, 10.0)
            .Read(0, 1.0, 2.0, V(2, 1))
            .Read(0, 3.0, 4.0, V(1, 1))   // fine so far: c2#1 then c1#1
            .Read(0, 5.0, 6.0, V(2, 1));  // c2#1 cannot come back

        Assert.Equal("stale read", Assert.Single(CheckAll(history)).Kind);
    }

    /// <summary>
    /// The history of block 34 in a CI run (seed 1, a host whose fsyncs failed and was restarted):
    /// c1#140 was read while it was in flight, c0#165 was written and acknowledged, and c1#140
    /// came back. Sent once, that is a stale read; sent twice (the library retried it after its
    /// first send took effect and the reply was lost), the retry took effect after c0#165, as a
    /// disk may apply a write at any time before it completes.
    /// </summary>
    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 0)]
    public void A_write_sent_again_may_come_back_before_it_returns_and_never_after(int sends, int anomalies)
    {
        var history = new HistoryBuilder()
            .Write(V(1, 140), 34, 15.538, 25.015, sends: sends)
            .Read(34, 24.166, 24.169, V(1, 140))
            .Write(V(0, 165), 34, 24.660, 24.678)
            .Read(34, 25.519, 25.542, V(1, 140))
            .Read(34, 27.468, 27.469, V(1, 140));
        Assert.Equal(anomalies, CheckAll(history).Count(a => a.Kind == "stale read"));

        // Once it returned, its last send took effect: a value acknowledged after it replaces it for good.
        history.Write(V(0, 166), 34, 28.0, 28.1).Read(34, 29.0, 29.1, V(1, 140));
        Assert.Equal(anomalies + 1, CheckAll(history).Count(a => a.Kind == "stale read"));
    }

    [Fact]
    public void A_write_sent_again_is_never_read_while_an_acknowledged_value_must_be_current()
    {
        // c1#1 is acknowledged at 1.0 and read at 5.0: it is the value throughout [1, 5]. c2#1,
        // in flight and sent twice, read at [3, 4]: it would have taken effect inside that zone.
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(2, 1), 0, 2.0, 10.0, sends: 2)
            .Read(0, 3.0, 4.0, V(2, 1))
            .Read(0, 5.0, 6.0, V(1, 1));

        var anomaly = Assert.Single(CheckAll(history));
        Assert.Equal("stale read", anomaly.Kind);
        Assert.Contains("sent 2 times, read in flight", anomaly.Explanation);
    }

    [Fact]
    public void A_write_sent_twice_comes_back_at_most_twice()
    {
        // Two writes in flight, each sent twice, read alternately six times: each needs three
        // effects. What two primaries serving one group during a failover would look like.
        var splitBrain = new HistoryBuilder()
            .Write(V(1, 1), 0, 0, 10, sends: 2).Write(V(2, 1), 0, 0, 10, sends: 2)
            .Read(0, 1, 1.1, V(1, 1)).Read(0, 2, 2.1, V(2, 1)).Read(0, 3, 3.1, V(1, 1))
            .Read(0, 4, 4.1, V(2, 1)).Read(0, 5, 5.1, V(1, 1)).Read(0, 6, 6.1, V(2, 1));
        var anomalies = CheckAll(splitBrain);
        Assert.Equal(2, anomalies.Count);
        Assert.All(anomalies, a => Assert.Contains("was sent 2 times but was read back 3 times", a.Explanation));

        // Back three times over acknowledged writes nobody read: also one comeback too many.
        var comebacks = new HistoryBuilder()
            .Write(V(1, 1), 0, 0, 10, sends: 2)
            .Write(V(2, 1), 0, 1, 1.5).Read(0, 2, 2.5, V(1, 1)).Write(V(2, 2), 0, 3, 3.5)
            .Read(0, 4, 4.5, V(1, 1)).Write(V(2, 3), 0, 5, 5.5).Read(0, 6, 6.5, V(1, 1));
        Assert.Contains("was sent 2 times but was read back 3 times", Assert.Single(CheckAll(comebacks)).Explanation);

        // Sent three times, the same history is legal.
        var legal = new HistoryBuilder()
            .Write(V(1, 1), 0, 0, 10, sends: 3)
            .Write(V(2, 1), 0, 1, 1.5).Read(0, 2, 2.5, V(1, 1)).Write(V(2, 2), 0, 3, 3.5)
            .Read(0, 4, 4.5, V(1, 1)).Write(V(2, 3), 0, 5, 5.5).Read(0, 6, 6.5, V(1, 1));
        Assert.Empty(CheckAll(legal));
    }

    [Fact]
    public void An_ambiguous_write_once_read_cannot_be_undone()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(2, 1), 0, 2.0, 3.0, Outcome.Failed)
            .Read(0, 4.0, 5.0, V(2, 1))
            .Read(0, 6.0, 7.0, V(1, 1));

        Assert.Equal("stale read", Assert.Single(CheckAll(history)).Kind);
    }

    [Fact]
    public void Zeros_after_an_acknowledged_and_flushed_write_are_a_lost_write_and_a_lost_flushed_write()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 3, 0.0, 1.0)
            .Flush(1, 2.0, 3.0)
            .ReadZeros(3, 10.0, 11.0, final: true);

        var anomalies = CheckAll(history, 3);
        Assert.Equal(["lost flushed write", "lost write"], anomalies.Select(a => a.Kind).Order());
        Assert.All(anomalies, a => Assert.Equal(3, a.Block));
    }

    [Fact]
    public void A_flushed_write_reverted_to_an_older_value_is_lost()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(1, 2), 0, 2.0, 3.0)
            .Flush(1, 4.0, 5.0)
            .Read(0, 10.0, 11.0, V(1, 1), final: true);

        var anomalies = CheckAll(history, 0);
        Assert.Contains(anomalies, a => a.Kind == "lost flushed write" && a.Explanation.Contains("c1#2"));
        Assert.Contains(anomalies, a => a.Kind == "stale read");
    }

    [Fact]
    public void A_write_acknowledged_after_the_flush_was_invoked_is_not_covered_by_it()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 2.5)
            .Flush(1, 2.0, 3.0)
            .Write(V(2, 1), 0, 1.0, 2.0, Outcome.Failed)
            .Read(0, 10.0, 11.0, V(2, 1), final: true);   // the ambiguous write landed last: legal

        Assert.Empty(CheckAll(history, 0));
    }

    [Fact]
    public void A_garbled_block_is_reported_whatever_else_the_history_says()
    {
        const int tag = 77;
        var torn = BlockValue.Encode(tag, V(1, 1), 0);
        BlockValue.Encode(tag, V(2, 1), 0).AsSpan(2048).CopyTo(torn.AsSpan(2048));
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .Write(V(2, 1), 0, 0.0, 1.0)
            .ReadBytes(0, 2.0, 3.0, torn, tag, final: true);

        var anomaly = Assert.Single(CheckAll(history, 0));
        Assert.Equal("garbled read", anomaly.Kind);
        Assert.Contains("bytes 2048..4095 differ", anomaly.Explanation);
    }

    [Fact]
    public void A_value_nobody_wrote_and_a_value_read_before_its_write_are_anomalies()
    {
        var history = new HistoryBuilder()
            .Read(0, 0.0, 1.0, V(1, 1))
            .Write(V(1, 1), 0, 2.0, 3.0)
            .Read(1, 0.0, 1.0, V(5, 5));

        Assert.Equal(["phantom value", "read from the future"], CheckAll(history).Select(a => a.Kind).Order());
    }

    [Fact]
    public void A_block_that_cannot_be_read_after_healing_is_an_anomaly()
    {
        var history = new HistoryBuilder()
            .Write(V(1, 1), 0, 0.0, 1.0)
            .FailedRead(0, 10.0, 11.0, final: true);

        Assert.Equal(["not read after healing", "unreadable after healing"], CheckAll(history, 0, 1).Select(a => a.Kind).Order());
    }

    [Fact]
    public void Values_decode_as_written_and_any_damage_is_garbled()
    {
        const int tag = 5;
        var value = BlockValue.Encode(tag, V(3, 42), 7);
        Assert.Equal(new BlockRead(ReadKind.Value, V(3, 42)), BlockValue.Decode(value, tag, 7));
        Assert.Equal(ReadKind.Zeros, BlockValue.Decode(new byte[BlockValue.Size], tag, 7).Kind);

        var flipped = (byte[])value.Clone();
        flipped[3000] ^= 0x01;
        Assert.Contains("bytes 3000..3000 differ", BlockValue.Decode(flipped, tag, 7).Detail);
        Assert.Contains("for block 7, read at block 8", BlockValue.Decode(value, tag, 8).Detail);
        Assert.Contains("another run", BlockValue.Decode(value, tag + 1, 7).Detail);
        var foreign = new byte[BlockValue.Size];
        foreign[100] = 9;
        Assert.Equal(ReadKind.Garbled, BlockValue.Decode(foreign, tag, 7).Kind);
    }
}
