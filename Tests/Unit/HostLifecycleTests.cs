using System.Collections.Immutable;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class HostLifecycleTests
{
    private static readonly DateTimeOffset Now = TestMaps.Now;
    private static readonly Guid VolumeId = Guid.NewGuid();

    /// <summary>Hosts host-1..host-N Up and one volume of factor <paramref name="factor"/> with 6 groups.</summary>
    private static ClusterMap Cluster(int hosts, int factor)
    {
        var transitions = TestMaps.Transitions(groupsPerVolume: 6);
        return transitions.CreateVolume(TestMaps.WithHosts(transitions, hosts), VolumeId, "v", 6L << 20, factor);
    }

    private static ImmutableArray<PlacementGroup> Groups(ClusterMap map) => map.FindVolume(VolumeId)!.PlacementGroups;

    private static ClusterMap CompleteAll(ClusterMap map)
    {
        foreach (var pg in Groups(map))
        {
            foreach (var pending in pg.Pending)
            {
                map = HostLifecycle.CompleteCopy(map, VolumeId, pg.Index, pending.HostId, map.Epoch);
            }
        }
        return map;
    }

    [Fact]
    public void Down_host_leaves_every_acting_set_and_a_survivor_becomes_primary()
    {
        var map = Cluster(3, 2);
        var down = HostLifecycle.MarkDown(map, "host-1", Now);

        Assert.Equal(map.Epoch + 1, down.Epoch);
        Assert.Equal(HostState.Down, down.FindHost("host-1")!.State);
        foreach (var (before, after) in Groups(map).Zip(Groups(down)))
        {
            Assert.DoesNotContain("host-1", after.Replicas);
            Assert.Equal(before.Contains("host-1"), after.Absent.Contains("host-1"));
            Assert.True(after.IsAvailable);
            Assert.Equal(before.Replicas.Remove("host-1"), after.Replicas.AsEnumerable());
        }
        Assert.Same(down, HostLifecycle.MarkDown(down, "host-1", Now));
        // Within the grace period nothing is re-replicated: the host may come back.
        Assert.Same(down, HostLifecycle.PlanRecovery(down));
    }

    [Fact]
    public void A_host_that_returned_before_the_last_to_leave_is_resynced_once_the_group_is_back()
    {
        // Both replicas leave (host-2 last); host-1 returns first and cannot take the group (it
        // may lack writes host-2 took); host-2 returns and takes it back. host-1 is Up: it must
        // not stay absent forever, leaving the group degraded with no recovery planned.
        var map = Cluster(2, 2);
        map = HostLifecycle.MarkDown(map, "host-1", Now);
        map = HostLifecycle.MarkDown(map, "host-2", Now);
        map = HostLifecycle.Register(map, TestMaps.Registration("host-1"), Now);
        map = HostLifecycle.Register(map, TestMaps.Registration("host-2"), Now);
        Assert.Contains(Groups(map), pg => pg.Absent.Contains("host-1"));

        var planned = HostLifecycle.PlanRecovery(map);
        Assert.All(Groups(planned), pg =>
        {
            Assert.True(pg.Replicas.SequenceEqual(["host-2"]), pg.Describe());
            Assert.Empty(pg.Absent);
            Assert.True(pg.FindPending("host-1") is { Resync: true }, pg.Describe());
        });
    }

    [Fact]
    public void A_host_turning_near_full_is_one_map_change_and_takes_no_replacement_replicas()
    {
        var map = Cluster(4, 2);
        var full = HostLifecycle.Register(map, TestMaps.Registration("host-4") with { NearFull = true }, Now);
        Assert.Equal(map.Epoch + 1, full.Epoch);
        Assert.True(full.FindHost("host-4")!.NearFull);
        Assert.Same(full, HostLifecycle.Register(full, TestMaps.Registration("host-4") with { NearFull = true }, Now)); // no change, no epoch

        // host-1 dies and is Out: its groups are refilled, never on the near-full host.
        var down = HostLifecycle.MarkDown(full, "host-1", Now);
        var recovering = HostLifecycle.PlanRecovery(HostLifecycle.MarkOut(down, "host-1", Now));
        Assert.Contains(Groups(recovering), pg => !pg.Pending.IsEmpty);
        Assert.All(Groups(recovering), pg => Assert.Null(pg.FindPending("host-4")));

        var roomy = HostLifecycle.Register(full, TestMaps.Registration("host-4"), Now);
        Assert.False(roomy.FindHost("host-4")!.NearFull);
    }

    [Fact]
    public void Group_with_every_replica_down_is_unavailable_and_only_the_last_to_leave_takes_it_back()
    {
        var map = Cluster(2, 2);
        map = HostLifecycle.MarkDown(map, "host-1", Now);
        map = HostLifecycle.MarkDown(map, "host-2", Now);
        Assert.All(Groups(map), pg => Assert.False(pg.IsAvailable));

        // host-1 left first: it missed writes that host-2 acknowledged alone, so it must wait.
        var firstBack = HostLifecycle.Register(map, TestMaps.Registration("host-1"), Now);
        Assert.All(Groups(firstBack), pg => Assert.False(pg.IsAvailable));

        var lastBack = HostLifecycle.Register(firstBack, TestMaps.Registration("host-2"), Now);
        Assert.All(Groups(lastBack), pg => Assert.Equal(["host-2"], pg.Replicas.AsEnumerable()));
        // Now host-1 has a source to resync from.
        var recovered = HostLifecycle.Register(HostLifecycle.MarkDown(lastBack, "host-1", Now), TestMaps.Registration("host-1"), Now);
        Assert.All(Groups(recovered), pg => Assert.True(pg.FindPending("host-1")?.Resync));
    }

    [Fact]
    public void Returning_while_down_resyncs_as_pending_then_joins_the_acting_set()
    {
        var map = HostLifecycle.MarkDown(Cluster(3, 3), "host-2", Now);
        var back = HostLifecycle.Register(map, TestMaps.Registration("host-2"), Now);

        Assert.Equal(HostState.Up, back.FindHost("host-2")!.State);
        Assert.All(Groups(back), pg =>
        {
            Assert.Equal(new PendingReplica("host-2", back.Epoch, Resync: true), Assert.Single(pg.Pending));
            Assert.Empty(pg.Absent);
            Assert.Contains("host-2", pg.ForwardTargets);
        });

        // A copy that began before host-2 became pending is refused.
        var pg0 = Groups(back)[0];
        Assert.Same(back, HostLifecycle.CompleteCopy(back, VolumeId, 0, "host-2", back.Epoch - 1));

        var done = CompleteAll(back);
        Assert.All(Groups(done), pg => Assert.Equal(3, pg.Replicas.Length));
        Assert.Equal(pg0.Replicas.Add("host-2"), Groups(done)[0].Replicas.AsEnumerable());
    }

    [Fact]
    public void Out_host_is_replaced_on_another_up_host_and_returns_empty()
    {
        var map = Cluster(4, 2);
        map = HostLifecycle.MarkDown(map, "host-1", Now);
        map = HostLifecycle.MarkOut(map, "host-1", Now);
        Assert.All(Groups(map), pg => Assert.False(pg.References("host-1")));

        var planned = HostLifecycle.PlanRecovery(map);
        Assert.Equal(map.Epoch + 1, planned.Epoch);
        foreach (var pg in Groups(planned))
        {
            Assert.Equal(0, pg.Deficit(2));
            Assert.All(pg.Pending, p => Assert.False(p.Resync));
            Assert.All(pg.Pending, p => Assert.DoesNotContain(p.HostId, pg.Replicas));
        }
        Assert.Same(planned, HostLifecycle.PlanRecovery(planned));

        var done = CompleteAll(planned);
        Assert.All(Groups(done), pg => Assert.Equal(2, pg.Replicas.Length));

        var back = HostLifecycle.Register(done, TestMaps.Registration("host-1"), Now);
        Assert.Equal(HostState.Up, back.FindHost("host-1")!.State);
        Assert.All(Groups(back), pg => Assert.False(pg.References("host-1")));
    }

    [Fact]
    public void Evacuate_moves_every_group_off_then_remove_takes_the_host_out_of_the_map()
    {
        var map = Cluster(3, 2);
        Assert.Throws<InvalidRequestException>(() => HostLifecycle.Remove(map, "host-3"));

        var draining = HostLifecycle.Evacuate(map, "host-3", Now);
        Assert.Equal(HostState.Draining, draining.FindHost("host-3")!.State);
        Assert.Throws<InvalidRequestException>(() => HostLifecycle.Remove(draining, "host-3"));

        var done = CompleteAll(HostLifecycle.PlanRecovery(draining));
        Assert.All(Groups(done), pg =>
        {
            Assert.False(pg.References("host-3"));
            Assert.Equal(2, pg.Replicas.Length);
            Assert.Empty(pg.Leaving);
        });
        var removed = HostLifecycle.Remove(done, "host-3");
        Assert.Null(removed.FindHost("host-3"));
        Assert.Throws<InvalidRequestException>(() => HostLifecycle.Evacuate(Cluster(2, 2), "host-1", Now));
    }

    [Fact]
    public void A_host_evacuated_while_it_was_being_resynced_still_leaves_every_group()
    {
        // Under load a forward refused across a map change has its replica resynced; an
        // evacuation that starts meanwhile finds the host pending, not acting, in that group.
        var map = Cluster(3, 2);
        var group = Groups(map).First(pg => pg.Replicas.Length > 1 && pg.Replicas[1] == "host-3");
        map = HostLifecycle.ResyncReplica(map, VolumeId, group.Index, "host-3", map.Epoch);
        Assert.NotNull(Groups(map)[group.Index].FindPending("host-3"));

        map = HostLifecycle.Evacuate(map, "host-3", Now);
        map = HostLifecycle.CompleteCopy(map, VolumeId, group.Index, "host-3", map.Epoch); // the resync finishes
        for (var step = 0; step < 4; step++)
        {
            map = CompleteAll(HostLifecycle.PlanRecovery(map));
        }

        Assert.All(Groups(map), pg => Assert.False(pg.References("host-3"), $"group {pg.Index} still names the evacuated host-3: [{string.Join(", ", pg.Replicas)}], leaving [{string.Join(", ", pg.Leaving)}]"));
    }

    [Fact]
    public void Rebalance_moves_replicas_to_a_new_host_then_evens_primaries()
    {
        var map = Cluster(3, 2);
        map = HostLifecycle.Register(map, TestMaps.Registration("host-4"), Now);

        var step = HostLifecycle.PlanRebalance(map);
        Assert.True(step.Epoch > map.Epoch);
        Assert.Same(step, HostLifecycle.PlanRebalance(step)); // moves in flight: nothing more
        for (var i = 0; i < 5; i++)
        {
            step = HostLifecycle.PlanRebalance(CompleteAll(step));
        }
        var counts = Groups(step).SelectMany(pg => pg.Replicas).GroupBy(h => h).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(4, counts.Count);
        Assert.True(counts.Values.Max() - counts.Values.Min() <= 1, string.Join(", ", counts));
        var primaries = Groups(step).GroupBy(pg => pg.Primary).Select(g => g.Count()).ToList();
        Assert.True(primaries.Max() - primaries.DefaultIfEmpty(0).Min() <= 1 || primaries.Count < 4);
        Assert.All(Groups(step), pg => Assert.Equal(2, pg.Replicas.Distinct().Count()));
    }

    [Fact]
    public void Replica_that_missed_a_write_leaves_the_acting_set_until_resynced()
    {
        var map = Cluster(3, 3);
        var pg = Groups(map)[2];
        var secondary = pg.Replicas[1];

        var next = HostLifecycle.ResyncReplica(map, VolumeId, 2, secondary, map.Epoch);
        Assert.Equal(map.Epoch + 1, next.Epoch);
        var changed = Groups(next)[2];
        Assert.DoesNotContain(secondary, changed.Replicas);
        Assert.Equal(new PendingReplica(secondary, next.Epoch, Resync: true), Assert.Single(changed.Pending));
        Assert.Equal(0, changed.Deficit(3)); // no new replica is planned for it
        Assert.Equal(Groups(map)[3], Groups(next)[3]); // other groups untouched

        // A miss reported from before it became pending is covered by the resync; a later one restarts
        // it (a copy begun before then refuses to complete).
        Assert.Same(next, HostLifecycle.ResyncReplica(next, VolumeId, 2, secondary, map.Epoch));
        var again = HostLifecycle.ResyncReplica(next, VolumeId, 2, secondary, next.Epoch);
        Assert.Equal(again.Epoch, Assert.Single(Groups(again)[2].Pending).SinceEpoch);
        Assert.Same(again, HostLifecycle.CompleteCopy(again, VolumeId, 2, secondary, next.Epoch));

        // The primary, a host outside the group, and a host already Down change nothing.
        Assert.Same(map, HostLifecycle.ResyncReplica(map, VolumeId, 2, pg.Primary, map.Epoch));
        Assert.Same(map, HostLifecycle.ResyncReplica(map, VolumeId, 2, "host-9", map.Epoch));
        var down = HostLifecycle.MarkDown(map, secondary, Now);
        Assert.Same(down, HostLifecycle.ResyncReplica(down, VolumeId, 2, secondary, down.Epoch));
    }

    [Fact]
    public void Rebalance_evens_every_volume_not_just_the_totals()
    {
        var transitions = TestMaps.Transitions(groupsPerVolume: 12);
        var map = transitions.CreateVolume(TestMaps.WithHosts(transitions, 3), Guid.NewGuid(), "one", 12L << 20, 1);
        map = transitions.CreateVolume(map, Guid.NewGuid(), "three", 12L << 20, 3);
        map = HostLifecycle.Register(map, TestMaps.Registration("host-4"), Now);

        for (var step = 0; step < 6; step++)
        {
            var planned = HostLifecycle.PlanRebalance(map);
            foreach (var (volume, pg) in planned.AllGroups().ToList())
            {
                foreach (var pending in pg.Pending)
                {
                    planned = HostLifecycle.CompleteCopy(planned, volume.VolumeId, pg.Index, pending.HostId, planned.Epoch);
                }
            }
            map = planned;
        }
        foreach (var volume in map.Volumes)
        {
            var replicas = volume.PlacementGroups.SelectMany(pg => pg.Replicas).GroupBy(h => h).Select(g => g.Count()).ToList();
            Assert.Equal(4, replicas.Count);
            Assert.True(replicas.Max() - replicas.Min() <= 1, $"volume '{volume.Name}': replicas per host {string.Join(",", replicas)}");
            var primaries = volume.PlacementGroups.GroupBy(pg => pg.Primary).Select(g => g.Count()).ToList();
            Assert.True(primaries.Count == 4 && primaries.Max() - primaries.Min() <= 1, $"volume '{volume.Name}': primaries per host {string.Join(",", primaries)}");
        }
    }

    [Fact]
    public void A_returned_host_gets_its_share_of_primaries_back_once_nothing_moves()
    {
        var map = HostLifecycle.MarkDown(Cluster(3, 2), "host-1", Now);
        Assert.Same(map, HostLifecycle.PlanPrimaryBalance(map)); // a host is Down: wait
        map = CompleteAll(HostLifecycle.Register(map, TestMaps.Registration("host-1"), Now));
        Assert.DoesNotContain(Groups(map), pg => pg.Primary == "host-1"); // it rejoined last everywhere

        var balanced = HostLifecycle.PlanPrimaryBalance(map);
        Assert.Equal(map.Epoch + 1, balanced.Epoch);
        var primaries = Groups(balanced).GroupBy(pg => pg.Primary).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(3, primaries.Count);
        Assert.True(primaries.Values.Max() - primaries.Values.Min() <= 1);
        Assert.All(Groups(balanced).Zip(Groups(map)), pair => Assert.Equal(pair.Second.Replicas.Order(), pair.First.Replicas.Order()));
        Assert.Same(balanced, HostLifecycle.PlanPrimaryBalance(balanced));
    }
}
