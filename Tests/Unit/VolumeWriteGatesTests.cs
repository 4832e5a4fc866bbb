using OrleansStorage.Client.Library;
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

    [Fact]
    public async Task A_writer_paused_by_two_creates_goes_on_only_when_both_resumed_it()
    {
        var gates = new VolumeWriteGates();
        var volume = Guid.NewGuid();
        // The first create committed and waits out a primary's lease, its writers still paused; the second pauses them too.
        await gates.QuiesceAsync(volume, Drain, Hold);
        await gates.QuiesceAsync(volume, Drain, Hold);
        // The first's resume arrives while the second is being committed.
        await gates.ResumeAsync(volume);
        var write = gates.EnterAsync(volume, CancellationToken.None);
        Assert.False(write.IsCompleted, "a write got through while the second create was being committed: the first create's resume ended its pause");
    }
}
