using OrleansStorage.Leases;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// Primary leases on one manual clock (docs/failures.md, "Read leases"): a new primary serves a
/// group only once every earlier primary that may still serve it has run out or has adopted the
/// map that deposed it.
/// </summary>
public class LeaseTests
{
    private static readonly LeaseOptions Options = new() { Duration = TimeSpan.FromSeconds(8), RenewInterval = TimeSpan.FromSeconds(1), ClockDriftBound = 0.01 };
    private static readonly TimeSpan Stretched = Options.Stretch(Options.Duration);

    /// <summary>Three hosts, one volume of factor 2 with 4 groups; host-1 leads group 0.</summary>
    private static (ClusterMap Map, Guid VolumeId) Layout()
    {
        var transitions = TestMaps.Transitions(4);
        var volumeId = Guid.NewGuid();
        var hosts = TestMaps.WithHosts(transitions, 3);
        var map = Committed(hosts, transitions.CreateVolume(hosts, volumeId, "v", 8 << 20, 2));
        var primary = map.FindVolume(volumeId)!.PlacementGroups[0].Primary;
        Assert.Equal("host-1", primary);
        return (map, volumeId);
    }

    /// <summary>The map as management commits it: stamped with the epoch each group got its primary.</summary>
    private static ClusterMap Committed(ClusterMap previous, ClusterMap next) => ClusterMapTransitions.StampPrimaryChanges(previous, next);

    /// <summary>A table whose own activation began long ago: only leases it granted count.</summary>
    private static LeaseTable SettledTable(ManualClock clock, ClusterMap map)
    {
        var table = new LeaseTable(Options, clock);
        table.MapChanged(map, map with { });
        clock.Advance(Stretched + TimeSpan.FromSeconds(1));
        return table;
    }

    private static PrimaryLease Holder(string hostId, ManualClock clock, LeaseTable table, ClusterMap map)
    {
        var lease = new PrimaryLease(hostId, Options, clock);
        var sent = lease.Now();
        lease.Apply(table.Grant(new LeaseRequest(hostId, map.Epoch), map), map, sent);
        return lease;
    }

    /// <summary>A renewal as a host sends it: echoing its last grant; the table hears it as the management grain does.</summary>
    private static LeaseGrant Renewed(LeaseTable table, PrimaryLease lease, ClusterMap map)
    {
        var request = lease.Request(map.Epoch);
        table.Witnesses.Heard(request, map);
        return table.Grant(request, map);
    }

    [Fact]
    public void A_new_primary_waits_out_the_lease_of_a_deposed_primary_that_never_heard_of_the_change()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var table = SettledTable(clock, map);
        var old = Holder("host-1", clock, table, map);
        Assert.Equal(TimeSpan.Zero, old.WaitBeforeServing(map, volumeId, 0));

        clock.Advance(TimeSpan.FromSeconds(2));
        var next = Committed(map, HostLifecycle.MarkDown(map, "host-1", TestMaps.Now));
        table.MapChanged(map, next);
        var successor = next.FindVolume(volumeId)!.PlacementGroups[0].Primary;
        var lease = Holder(successor, clock, table, next);

        var wait = lease.WaitBeforeServing(next, volumeId, 0);
        Assert.NotNull(wait);
        // host-1 may serve until 8 s after it asked; the successor waits at least the 6 s left.
        Assert.True(wait >= TimeSpan.FromSeconds(6), $"waited only {wait}");
        Assert.True(wait <= Options.Stretch(Stretched), $"waited {wait}");
        // Groups host-1 did not lead are not held up.
        var other = next.FindVolume(volumeId)!.PlacementGroups.First(g => g.Primary == successor && map.FindVolume(volumeId)!.PlacementGroups[g.Index].Primary == successor);
        Assert.Equal(TimeSpan.Zero, lease.WaitBeforeServing(next, volumeId, other.Index));

        // The old primary itself stops within its own lease: 8 s after it asked, on its clock.
        clock.Advance(TimeSpan.FromSeconds(6) - TimeSpan.FromTicks(10));
        Assert.Equal(TimeSpan.Zero, old.WaitBeforeServing(map, volumeId, 0));
        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Null(old.WaitBeforeServing(map, volumeId, 0));
        Assert.NotEqual(TimeSpan.Zero, lease.WaitBeforeServing(next, volumeId, 0));

        // Past the wait (the successor renewed meanwhile, as its timer does), it serves.
        clock.Advance(wait!.Value);
        var sent = lease.Now();
        lease.Apply(table.Grant(new LeaseRequest(successor, next.Epoch), next), next, sent);
        Assert.Equal(TimeSpan.Zero, lease.WaitBeforeServing(next, volumeId, 0));
        Assert.Equal(0, table.Pending);
    }

    [Fact]
    public void A_deposed_primary_that_adopted_the_new_map_releases_its_groups_at_once()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var table = SettledTable(clock, map);
        Holder("host-1", clock, table, map);

        var next = Committed(map, HostLifecycle.MarkDown(map, "host-1", TestMaps.Now));
        table.MapChanged(map, next);
        Assert.True(table.Pending > 0);
        // The successor asks first: it must wait for host-1.
        var successor = next.FindVolume(volumeId)!.PlacementGroups[0].Primary;
        var lease = Holder(successor, clock, table, next);
        Assert.NotEqual(TimeSpan.Zero, lease.WaitBeforeServing(next, volumeId, 0));

        // host-1 asks on the new map: it now rejects the old epoch, so nobody need wait for it,
        // and the successor is named to be told so.
        var answer = table.Grant(new LeaseRequest("host-1", next.Epoch), next);
        Assert.True(answer.Granted);
        Assert.Equal(0, table.Pending);
        Assert.Contains(successor, table.TakeReleased(next));
        Assert.Empty(table.TakeReleased(next));

        // Its next grant lifts the wait.
        var sent = lease.Now();
        lease.Apply(table.Grant(new LeaseRequest(successor, next.Epoch), next), next, sent);
        Assert.Equal(TimeSpan.Zero, lease.WaitBeforeServing(next, volumeId, 0));
    }

    [Fact]
    public void A_host_behind_the_map_is_told_the_epoch_and_granted_nothing()
    {
        var clock = new ManualClock();
        var (map, _) = Layout();
        var table = SettledTable(clock, map);
        var next = Committed(map, HostLifecycle.MarkDown(map, "host-3", TestMaps.Now));
        table.MapChanged(map, next);

        var answer = table.Grant(new LeaseRequest("host-1", map.Epoch), next);

        Assert.False(answer.Granted);
        Assert.Equal(next.Epoch, answer.Epoch);
        var lease = new PrimaryLease("host-1", Options, clock);
        Assert.Throws<ArgumentException>(() => lease.Apply(answer, map, lease.Now()));
    }

    [Fact]
    public void A_lease_counts_from_when_it_was_asked_for_and_serves_only_its_own_epoch()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var table = SettledTable(clock, map);
        var lease = new PrimaryLease("host-1", Options, clock);
        var sent = lease.Now();
        clock.Advance(TimeSpan.FromSeconds(3)); // a slow answer
        lease.Apply(table.Grant(new LeaseRequest("host-1", map.Epoch), map), map, sent);

        Assert.Equal(map.Epoch, lease.Epoch);
        Assert.Null(lease.WaitBeforeServing(map with { Epoch = map.Epoch + 1 }, volumeId, 0));
        clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Null(lease.WaitBeforeServing(map, volumeId, 0));
        Assert.Equal(-1, lease.Epoch);
    }

    [Fact]
    public void After_a_management_failover_newly_led_groups_wait_for_leases_it_cannot_know_and_continuing_ones_do_not()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var before = SettledTable(clock, map);
        var host2 = Holder("host-2", clock, before, map);
        var continuing = map.FindVolume(volumeId)!.PlacementGroups.First(g => g.Primary == "host-2").Index;

        // The management service moves (its old activation granted host-1 a lease just now) and the
        // new one marks host-1 Down: it knows nothing of host-1's lease.
        Holder("host-1", clock, before, map);
        var after = new LeaseTable(Options, clock);
        clock.Advance(TimeSpan.FromSeconds(1));
        var next = Committed(map, HostLifecycle.MarkDown(map, "host-1", TestMaps.Now));
        after.MapChanged(map, next);
        Assert.Equal("host-2", next.FindVolume(volumeId)!.PlacementGroups[0].Primary);

        var sent = host2.Now();
        host2.Apply(after.Grant(new LeaseRequest("host-2", next.Epoch), next), next, sent);

        Assert.True(host2.WaitBeforeServing(next, volumeId, 0) >= TimeSpan.FromSeconds(7));
        Assert.Equal(TimeSpan.Zero, host2.WaitBeforeServing(next, volumeId, continuing));
    }

    /// <summary>
    /// Issue 28, hole 2. Activation A moves group 0 from host-1 to host-2 while host-1's lease
    /// runs and host-1 misses the push; host-2 is told to wait. A dies; host-2 renews with B,
    /// which knows nothing of host-1's lease, and host-2 already led the group under the lease it
    /// held: neither B's grant nor the unknown-lease rule may lift the wait A gave.
    /// </summary>
    [Fact]
    public void A_wait_for_a_deposed_primary_outlives_the_management_activation_that_set_it()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var first = SettledTable(clock, map);
        var deposed = Holder("host-1", clock, first, map);
        var deposedUntil = clock.GetTimestamp() + (long)(Options.Duration.TotalSeconds * clock.TimestampFrequency);
        var host2 = Holder("host-2", clock, first, map);

        clock.Advance(TimeSpan.FromSeconds(2));
        var next = Committed(map, HostLifecycle.MarkDown(map, "host-1", TestMaps.Now));
        first.MapChanged(map, next);
        Assert.Equal("host-2", next.FindVolume(volumeId)!.PlacementGroups[0].Primary);
        var sent = host2.Now();
        host2.Apply(first.Grant(new LeaseRequest("host-2", next.Epoch), next), next, sent);
        Assert.True(host2.WaitBeforeServing(next, volumeId, 0) >= TimeSpan.FromSeconds(6));

        // A dies; B activates and fences. host-1 never heard of the change and asks nobody.
        var second = new LeaseTable(Options, clock);
        second.Fenced(generation: 1);
        var host3 = Holder("host-3", clock, first, map);
        for (var renewal = 0; renewal < 3; renewal++)
        {
            clock.Advance(Options.RenewInterval);
            sent = host2.Now();
            host2.Apply(Renewed(second, host2, next), next, sent);
            sent = host3.Now();
            host3.Apply(Renewed(second, host3, next), next, sent);
            var wait = host2.WaitBeforeServing(next, volumeId, 0);
            // host-1's lease, asked for 2 s before the change, runs 8 s: host-2 must not serve the
            // group while host-1 may still serve it to a client on the old epoch.
            if (deposed.WaitBeforeServing(map, volumeId, 0) == TimeSpan.Zero)
            {
                Assert.True(wait > TimeSpan.Zero,
                    $"after renewal {renewal + 1} with a new management activation host-2 serves group 0 at epoch {next.Epoch}, while host-1 still serves it at epoch {map.Epoch} for {(deposedUntil - clock.GetTimestamp()) / 1000} ms");
            }
        }

        // host-2 and host-3 witnessed B by their second renewal: one witness window and one lease
        // (stretched) later, no activation before B can have a lease out, and host-2 serves: the
        // wait ends, it is not endless.
        Assert.True(second.Witnesses.IsEstablished);
        clock.Advance(Options.Stretch(Options.WitnessWindow + Options.Duration));
        Assert.Null(deposed.WaitBeforeServing(map, volumeId, 0));
        sent = host2.Now();
        host2.Apply(Renewed(second, host2, next), next, sent);
        Assert.Equal(TimeSpan.Zero, host2.WaitBeforeServing(next, volumeId, 0));
    }

    /// <summary>
    /// Issue 28, hole 2, second reading: host-1 leads g0 at e0, loses it to host-2 at e1, gets it
    /// back at e2 (all by activation A); host-1 misses e1 and e2, A dies, host-1 renews at e2 with
    /// B under its e0 lease. Its held map shows it leading g0, yet host-2 led it in between.
    /// </summary>
    [Fact]
    public void A_primary_deposed_and_reinstated_by_a_dead_activation_waits_for_the_interim_primary()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var a = SettledTable(clock, map);
        var host1 = Holder("host-1", clock, a, map);          // t=0, lease at e0 until 8
        var host2 = Holder("host-2", clock, a, map);

        clock.Advance(TimeSpan.FromSeconds(1));               // t=1: A moves g0 to host-2 (host-1 misses it)
        var e1 = Committed(map, HostLifecycle.MarkDown(map, "host-1", TestMaps.Now));
        a.MapChanged(map, e1);
        Assert.Equal("host-2", e1.FindVolume(volumeId)!.PlacementGroups[0].Primary);
        var sent = host2.Now();
        host2.Apply(a.Grant(new LeaseRequest("host-2", e1.Epoch), e1), e1, sent);
        clock.Advance(TimeSpan.FromSeconds(2));               // t=3: host-2 renews at e1
        sent = host2.Now();
        host2.Apply(a.Grant(new LeaseRequest("host-2", e1.Epoch), e1), e1, sent);

        clock.Advance(TimeSpan.FromSeconds(1));               // t=4: A moves g0 back to host-1 (host-2 misses it)
        var v1 = e1.FindVolume(volumeId)!;
        var g0 = v1.PlacementGroups[0] with { Replicas = ["host-1"], Absent = ["host-2"], Pending = [], Leaving = [] };
        var e2 = Committed(e1, e1 with { Epoch = e1.Epoch + 1, Volumes = e1.Volumes.Replace(v1, v1 with { PlacementGroups = v1.PlacementGroups.SetItem(0, g0) }) });
        Assert.Equal("host-1", e2.FindVolume(volumeId)!.PlacementGroups[0].Primary);
        a.MapChanged(e1, e2);

        var b = new LeaseTable(Options, clock);               // A dies; B activates and fences
        b.Fenced(generation: 1);
        clock.Advance(TimeSpan.FromSeconds(1));               // t=5: host-1 (told e2 by B) catches up and renews with B
        sent = host1.Now();
        host1.Apply(b.Grant(new LeaseRequest("host-1", e2.Epoch), e2), e2, sent);
        var wait1 = host1.WaitBeforeServing(e2, volumeId, 0);

        clock.Advance(TimeSpan.FromSeconds(2));               // t=7: host-1 renews with B
        sent = host1.Now();
        host1.Apply(b.Grant(new LeaseRequest("host-1", e2.Epoch), e2), e2, sent);
        clock.Advance(TimeSpan.FromSeconds(1.5));             // t=8.5: host-2's wait for host-1's e0 lease is over
        var at2 = host2.WaitBeforeServing(e1, volumeId, 0);
        var at1 = host1.WaitBeforeServing(e2, volumeId, 0);
        Assert.False(at1 == TimeSpan.Zero && at2 == TimeSpan.Zero,
            $"t=8.5 s: host-1 serves g0 at epoch {e2.Epoch} (its wait at t=5 was {wait1}) while host-2 serves it at epoch {e1.Epoch}");
    }

    [Fact]
    public void A_host_whose_lease_ran_out_waits_like_a_new_one_after_a_failover()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var before = SettledTable(clock, map);
        var host1 = Holder("host-1", clock, before, map);
        clock.Advance(TimeSpan.FromSeconds(9)); // cut off: no renewal for longer than the lease
        var after = new LeaseTable(Options, clock);

        var sent = host1.Now();
        host1.Apply(after.Grant(new LeaseRequest("host-1", map.Epoch), map), map, sent);

        Assert.NotEqual(TimeSpan.Zero, host1.WaitBeforeServing(map, volumeId, 0));
    }

    [Fact]
    public void A_volume_created_after_a_management_failover_is_served_at_once_and_one_that_existed_before_waits()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var before = SettledTable(clock, map);
        Holder("host-1", clock, before, map);

        // A new activation, still inside the window where the old one's leases may live, creates a
        // volume: no lease it did not grant can cover a group of a volume it made.
        var after = new LeaseTable(Options, clock);
        clock.Advance(TimeSpan.FromSeconds(1));
        var transitions = TestMaps.Transitions(4);
        var createdId = Guid.NewGuid();
        var next = Committed(map, transitions.CreateVolume(map, createdId, "new", 8 << 20, 2));
        after.MapChanged(map, next);
        var created = next.FindVolume(createdId)!;
        var host2 = Holder("host-2", clock, after, next);

        foreach (var group in created.PlacementGroups.Where(g => g.Primary == "host-2"))
        {
            Assert.Equal(TimeSpan.Zero, host2.WaitBeforeServing(next, createdId, group.Index));
        }
        // The groups of the volume that was there before the failover still wait for leases the new
        // activation cannot know of.
        var older = next.FindVolume(volumeId)!.PlacementGroups.First(g => g.Primary == "host-2");
        Assert.True(host2.WaitBeforeServing(next, volumeId, older.Index) >= TimeSpan.FromSeconds(7));
        Assert.Contains(created.PlacementGroups, g => g.Primary == "host-2");
    }

    [Fact]
    public void A_volume_created_before_the_failover_is_not_taken_for_a_new_one_when_it_is_deleted_and_its_name_reused()
    {
        var clock = new ManualClock();
        var (map, volumeId) = Layout();
        var after = new LeaseTable(Options, clock);
        var transitions = TestMaps.Transitions(4);
        var deleted = Committed(map, map with { Epoch = map.Epoch + 1, Volumes = [] });
        after.MapChanged(map, deleted);
        var reusedId = Guid.NewGuid();
        var recreated = Committed(deleted, transitions.CreateVolume(deleted, reusedId, "v", 8 << 20, 2));
        after.MapChanged(deleted, recreated);
        var host1 = Holder("host-1", clock, after, recreated);

        // The name is the old one, the volume is new: it is served at once.
        Assert.Equal(TimeSpan.Zero, host1.WaitBeforeServing(recreated, reusedId, 0));
        Assert.Null(recreated.FindVolume(volumeId));
    }

    [Fact]
    public void A_lease_that_could_outlast_a_snapshots_hold_of_its_writers_is_refused()
    {
        var tooLong = new LeaseOptions { Duration = ManagementGrain.WriterHoldLimit - TimeSpan.FromMilliseconds(100), RenewInterval = TimeSpan.FromSeconds(2) };
        Assert.Contains("stretched", tooLong.Problem());
        // Leases an earlier management activation granted on its witnesses last a witness window longer.
        var slowRenewals = new LeaseOptions { Duration = TimeSpan.FromSeconds(10), RenewInterval = TimeSpan.FromSeconds(5) };
        Assert.Contains("three Leases:RenewInterval", slowRenewals.Problem());
        Assert.Null(new LeaseOptions().Problem());
    }
}
