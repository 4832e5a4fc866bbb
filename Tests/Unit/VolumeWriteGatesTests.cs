using OrleansStorage.Client.Library;
using OrleansStorage.Management;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// A client's write gates around snapshots (docs/snapshots.md), driven with the calls the
/// management service makes, in the order it makes them when two creates of one volume overlap.
/// </summary>
public class VolumeWriteGatesTests
{
    private static readonly TimeSpan Drain = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Hold = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_writer_paused_by_two_creates_goes_on_only_when_both_resumed_it()
    {
        var gates = new VolumeWriteGates();
        var volume = Guid.NewGuid();
        var (first, second) = (Guid.NewGuid(), Guid.NewGuid());
        // The first create committed and waits out a primary's lease, its writers still paused; the second pauses them too.
        await gates.QuiesceAsync(volume, first, Drain, Hold);
        await gates.QuiesceAsync(volume, second, Drain, Hold);
        // The first's resume arrives while the second is being committed.
        await gates.ResumeAsync(volume, first);
        var write = gates.EnterAsync(volume, CancellationToken.None);
        Assert.False(write.IsCompleted, "a write got through while the second create was being committed: the first create's resume ended its pause");

        await gates.ResumeAsync(volume, second);
        using var pass = await write.AsTask().WaitAsync(Bound);
    }

    [Fact]
    public async Task Each_pause_ends_at_its_own_hold_limit_and_a_resume_of_another_does_not_end_it()
    {
        var gates = new VolumeWriteGates();
        var volume = Guid.NewGuid();
        var (resumed, lost) = (Guid.NewGuid(), Guid.NewGuid());
        await gates.QuiesceAsync(volume, resumed, Drain, Hold);
        // This create's resume never comes (its creator died): its pause ends by itself, soon here.
        await gates.QuiesceAsync(volume, lost, Drain, TimeSpan.FromMilliseconds(50));
        await gates.ResumeAsync(volume, resumed);
        using var pass = await gates.EnterAsync(volume, CancellationToken.None).AsTask().WaitAsync(Bound);
    }

    [Fact]
    public async Task A_resume_that_overtakes_its_pause_keeps_the_pause_from_beginning()
    {
        var gates = new VolumeWriteGates();
        var volume = Guid.NewGuid();
        var pause = Guid.NewGuid();
        await gates.ResumeAsync(volume, pause);
        await gates.QuiesceAsync(volume, pause, Drain, Hold);
        var write = gates.EnterAsync(volume, CancellationToken.None);
        Assert.True(write.IsCompleted, "a pause whose resume had already arrived held the writes");
        (await write).Dispose();
    }

    [Fact]
    public async Task Two_pauses_waiting_for_the_same_write_in_flight_both_begin_when_it_finishes()
    {
        var gates = new VolumeWriteGates();
        var volume = Guid.NewGuid();
        var inFlight = await gates.EnterAsync(volume, CancellationToken.None);
        var first = gates.QuiesceAsync(volume, Guid.NewGuid(), Hold, Hold);
        var second = gates.QuiesceAsync(volume, Guid.NewGuid(), Hold, Hold);
        Assert.False(first.IsCompleted || second.IsCompleted, "a pause began before the write in flight finished");
        inFlight.Dispose();
        await Task.WhenAll(first, second).WaitAsync(Bound);
    }

    [Fact]
    public async Task A_writer_whose_renewals_keep_failing_holds_its_writes_until_one_succeeds()
    {
        var clock = new ManualClock();
        var gates = new VolumeWriteGates(clock);
        var volume = Guid.NewGuid();
        gates.Registered(volume, gates.Timestamp);
        clock.Advance(VolumeWriters.UnrenewedHoldAfter);
        (await gates.EnterAsync(volume, CancellationToken.None)).Dispose();

        // Every renewal since failed (a new management activation does not know this client): it
        // could take a snapshot without pausing it, so the client stops writing before that can be.
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.True(VolumeWriters.UnrenewedHoldAfter + TimeSpan.FromSeconds(1) < VolumeWriters.AllKnownAfter, "a new activation may snapshot before an unknown writer holds its writes");
        var write = gates.EnterAsync(volume, CancellationToken.None);
        Assert.False(write.IsCompleted, "a write went on although the client's last successful registration was sent longer ago than the bound");

        // A renewal sent before the bound, answered late, does not let it go on; a fresh one does.
        gates.Registered(volume, clock.GetTimestamp() - (long)(VolumeWriters.UnrenewedHoldAfter.TotalSeconds * 2 * clock.TimestampFrequency));
        await Task.Yield();
        Assert.False(write.IsCompleted, "a renewal sent before the bound let the held write go on");
        gates.Registered(volume, gates.Timestamp);
        using var pass = await write.AsTask().WaitAsync(Bound);
    }
}
