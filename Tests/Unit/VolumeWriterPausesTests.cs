using OrleansStorage.Management;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// The management service's bookkeeping of writer pauses around snapshots (docs/snapshots.md), on
/// one manual clock: pauses are one create's each, and a new activation knows every writer of a
/// volume that existed before it only once every live writer has had time to register again.
/// </summary>
public class VolumeWriterPausesTests
{
    private static readonly TimeSpan HoldLimit = TimeSpan.FromSeconds(20);

    private sealed class Writer : IVolumeWriterObserver
    {
        public Task QuiesceAsync(Guid volumeId, Guid pauseId, TimeSpan drainFor, TimeSpan holdAtMost) => Task.CompletedTask;

        public Task ResumeAsync(Guid volumeId, Guid pauseId) => Task.CompletedTask;
    }

    [Fact]
    public void A_new_activation_takes_no_snapshot_of_an_older_volume_until_every_writer_had_time_to_register_again()
    {
        var clock = new ManualClock();
        var (older, created) = (Guid.NewGuid(), Guid.NewGuid());
        var pauses = new VolumeWriterPauses(clock, [older], HoldLimit);

        Assert.Equal(VolumeWriters.AllKnownAfter, pauses.UnknownWritersFor(older));
        Assert.Equal(TimeSpan.Zero, pauses.UnknownWritersFor(created));
        // A renewal started just before the activation fails; the next comes one interval later.
        clock.Advance(VolumeWriters.RenewInterval);
        Assert.True(pauses.UnknownWritersFor(older) > TimeSpan.Zero, "an older volume's snapshot was allowed before every writer's next renewal could arrive");
        clock.Advance(VolumeWriters.AllKnownAfter - VolumeWriters.RenewInterval);
        Assert.Equal(TimeSpan.Zero, pauses.UnknownWritersFor(older));
    }

    [Fact]
    public void Each_create_ends_its_own_pause_and_a_pause_never_ended_runs_out_at_the_hold_limit()
    {
        var clock = new ManualClock();
        var pauses = new VolumeWriterPauses(clock, [], HoldLimit);
        var first = pauses.Begin("v");
        clock.Advance(TimeSpan.FromSeconds(5));
        var second = pauses.Begin("v");
        var other = pauses.Begin("w");
        Assert.Equal(new[] { first, second }.Order(), pauses.InForce("v").Order());

        pauses.End("v", first);
        pauses.End("v", first); // a repeated resume changes nothing
        Assert.Equal([second], pauses.InForce("v"));
        Assert.Equal([other], pauses.InForce("w"));

        // Its creator died: its writers went on by themselves at the hold limit, and a new writer does not start paused by it.
        clock.Advance(HoldLimit);
        Assert.Empty(pauses.InForce("v"));
    }

    [Fact]
    public void A_writer_registers_with_the_pauses_in_force_and_is_forgotten_when_it_stops_renewing_or_closes()
    {
        var clock = new ManualClock();
        var pauses = new VolumeWriterPauses(clock, [], HoldLimit);
        var (a, b) = (new Writer(), new Writer());
        Assert.Empty(pauses.Register("v", GrainId.Create("writer", "a"), a, watching: true));
        var pause = pauses.Begin("v");
        Assert.Equal([pause], pauses.Register("v", GrainId.Create("writer", "b"), b, watching: true));
        Assert.Equal(2, pauses.WritersOf("v").Count);

        pauses.Register("v", GrainId.Create("writer", "b"), b, watching: false);
        Assert.Same(a, Assert.Single(pauses.WritersOf("v")));
        clock.Advance(VolumeWriters.LeaseTime);
        Assert.Empty(pauses.WritersOf("v"));
    }

    [Fact]
    public void A_pause_is_ended_also_at_a_writer_whose_registration_ran_out_while_its_create_ran()
    {
        var clock = new ManualClock();
        var pauses = new VolumeWriterPauses(clock, [], HoldLimit);
        var (a, b) = (new Writer(), new Writer());
        pauses.Register("v", GrainId.Create("writer", "a"), a, watching: true);
        clock.Advance(TimeSpan.FromSeconds(1));
        pauses.Register("v", GrainId.Create("writer", "b"), b, watching: true);
        var pause = pauses.Begin("v");
        Assert.Equal(2, pauses.Ask("v", pause).Count);

        // a's registration runs out mid-create; b renews.
        clock.Advance(VolumeWriters.LeaseTime - TimeSpan.FromSeconds(0.5));
        pauses.Register("v", GrainId.Create("writer", "b"), b, watching: true);
        Assert.Same(b, Assert.Single(pauses.WritersOf("v")));
        var told = pauses.End("v", pause);
        Assert.Equal(2, told.Count);
        Assert.Contains(a, told);
        Assert.Contains(b, told);

        // Once ended, only the registered writers hear a repeated resume.
        Assert.Same(b, Assert.Single(pauses.End("v", pause)));
    }
}
