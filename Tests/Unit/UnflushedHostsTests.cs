using OrleansStorage.Client.Library;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>Which hosts a flush must reach: all of the volume's until this client flushed it once, then those its writes went to.</summary>
public sealed class UnflushedHostsTests
{
    private static readonly Guid Volume = Guid.NewGuid();

    [Fact]
    public void The_first_flush_reaches_every_host_then_only_those_written_to_since_the_last()
    {
        var unflushed = new UnflushedHosts();
        unflushed.Note(Volume, ["h1", "h2"]);
        Assert.Null(unflushed.Take(Volume)); // never flushed by this client: every host of the volume
        unflushed.Flushed(Volume);

        Assert.Empty(unflushed.Take(Volume)!); // nothing written since: no round trip at all
        unflushed.Flushed(Volume);
        unflushed.Note(Volume, ["h2", "h3"]);
        unflushed.Note(Guid.NewGuid(), ["h9"]); // another volume's writes are not this one's
        Assert.Equal(["h2", "h3"], unflushed.Take(Volume)!.Order());
    }

    [Fact]
    public void A_failed_flush_leaves_its_hosts_for_the_next_together_with_writes_made_meanwhile()
    {
        var unflushed = new UnflushedHosts();
        Assert.Null(unflushed.Take(Volume));
        unflushed.Flushed(Volume);
        unflushed.Note(Volume, ["h1"]);
        var taken = unflushed.Take(Volume);
        unflushed.Note(Volume, ["h2"]); // a write while the flush runs
        unflushed.Restore(Volume, taken); // the flush failed
        Assert.Equal(["h1", "h2"], unflushed.Take(Volume)!.Order());
    }

    [Fact]
    public void A_flush_that_overlapped_a_write_leaves_its_hosts_for_the_flush_after_the_write_ended()
    {
        // The Linux NBD client sends FLUSH with writes in flight: the flush that overlapped write W
        // reached h1 and h2 before W landed there, so the flush after W's acknowledgement must too.
        var unflushed = new UnflushedHosts();
        Assert.Null(unflushed.Take(Volume));
        unflushed.Flushed(Volume);
        using (unflushed.BeginWrite(Volume, ["h1", "h2"]))
        {
            Assert.Equal(["h1", "h2"], unflushed.Take(Volume)!.Order()); // the overlapping flush
            unflushed.Flushed(Volume);
        } // W ends and is acknowledged
        var next = unflushed.Take(Volume)!;
        Assert.True(next.SetEquals(["h1", "h2"]), $"the flush after W's acknowledgement reaches [{string.Join(",", next)}]: W's hosts were taken by a flush that overlapped it");
    }
}
