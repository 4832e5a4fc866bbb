using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Storage;
using Orleans.TestingHost;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A primary that loses its groups while it is alive, and never hears of it, serves nothing old
/// to a client that still holds its epoch: its lease runs out before the new primary serves
/// (docs/failures.md, "Read leases"). The partition variant, over a real network, is in
/// <c>PartitionTests</c>.
/// </summary>
[Collection(FailureClusterCollection.Name)]
public sealed class DeposedPrimaryTests(FailureClusterFixture fixture, ITestOutputHelper output)
{
    private const int Segment = StorageClusterFixture.SegmentSize;
    private readonly Eventually _eventually = new(output);

    [SkippableFact]
    public async Task A_primary_judged_failed_while_alive_with_its_map_news_dropped_serves_no_old_data()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Healthy, "a healthy cluster before the test");
        var name = "deposed-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var volume = (await MapAtRestAsync()).FindVolume(name)!;
        var deposed = volume.PlacementGroupOf(0).Primary;
        var writer = await fixture.Client.OpenVolumeAsync(name);
        var old = Replicas.RandomBytes(64 * 1024, seed: 1);
        var fresh = Replicas.RandomBytes(64 * 1024, seed: 2);
        await writer.WriteAsync(0, old);

        // The reader never follows pushes: it keeps the epoch at which the deposed host led.
        await using var readerClient = await OstorClient.AttachAsync(fixture.Cluster.Client, new OstorClientOptions { SubscribeToMapChanges = false });
        var reader = await readerClient.OpenVolumeAsync(name);
        var back = new byte[old.Length];
        await reader.ReadAsync(0, back);
        Assert.Equal(old, back);
        var readerEpoch = readerClient.Maps.Current.Epoch;
        Assert.Equal(deposed, readerClient.Maps.Current.FindVolume(name)!.PlacementGroupOf(0).Primary);
        output.WriteLine($"epoch {readerEpoch}: '{deposed}' leads group 0; management on {(await fixture.Management.GetStatusAsync()).Silo}");

        fixture.PushFilter.DropPushesTo(deposed);
        try
        {
            // What a partition from management looks like to the rest: the host is judged failed
            // and its groups get new primaries, while it runs on and hears nothing of it.
            await fixture.Management.HostFailedAsync(deposed, "judged failed by the test while it runs");
            var changed = await fixture.Management.GetMapAsync();
            Assert.NotEqual(deposed, changed.FindVolume(name)!.PlacementGroupOf(0).Primary);
            // The writer on the new map (its push may still be on the way; a write on the old map
            // would still be the deposed host's to serve, legitimately, while its lease lasts).
            await fixture.Client.Maps.RefreshAsync(changed.Epoch);

            var stall = Stopwatch.StartNew();
            await writer.WriteAsync(0, fresh);
            output.WriteLine($"the first write to the group after the change waited {stall.ElapsedMilliseconds} ms (the new primary waits out the deposed one's lease)");

            Assert.Equal(readerEpoch, (await fixture.Server(deposed).GetStatusAsync()).Epoch);
            // Straight to the deposed host, at the epoch it still holds: refused, never the old bytes.
            var refused = await Assert.ThrowsAsync<PrimaryLeaseException>(() =>
                fixture.Server(deposed).ReadAsync(new SegmentRead(readerEpoch, new SegmentAddress(volume.VolumeId, 0), 0, old.Length)));
            output.WriteLine(refused.Message);
            // Through the client: it is refused there, refreshes and reads the new primary.
            await reader.ReadAsync(0, back);
            Assert.Equal(fresh, back);
            Assert.True(readerClient.Maps.Current.Epoch > readerEpoch);
        }
        finally
        {
            fixture.PushFilter.DeliverAll();
        }

        // The host checks in again (it was never down), returns empty and is refilled.
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => m.FindHost(deposed)!.State == HostState.Up && Healthy(m), $"'{deposed}' back and every group full", TimeSpan.FromSeconds(120));
        await writer.ReadAsync(0, back);
        Assert.Equal(fresh, back);
        await fixture.Client.DeleteVolumeAsync(name);
    }

    /// <summary>
    /// Issue 28, hole 2: the management activation that deposed the primary, and told the new one
    /// to wait, is replaced before the deposed one's lease runs out. The new activation knows
    /// nothing of that deposition; its grants must not lift the wait.
    /// </summary>
    [SkippableFact]
    public async Task A_deposed_primary_serves_no_old_data_when_management_moves_before_its_lease_runs_out()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Healthy, "a healthy cluster before the test");
        var name = "deposed-moved-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var volume = (await MapAtRestAsync()).FindVolume(name)!;
        var segment = new SegmentAddress(volume.VolumeId, 0);
        var deposed = volume.PlacementGroupOf(0).Primary;
        var writer = await fixture.Client.OpenVolumeAsync(name);
        var old = Replicas.RandomBytes(64 * 1024, seed: 5);
        var fresh = Replicas.RandomBytes(64 * 1024, seed: 6);
        await writer.WriteAsync(0, old);
        var readerEpoch = (await fixture.Management.GetMapAsync()).Epoch;
        Assert.Equal(old, (await fixture.Server(deposed).ReadAsync(new SegmentRead(readerEpoch, segment, 0, old.Length))).Bytes.ToArray());

        fixture.PushFilter.DropPushesTo(deposed);
        try
        {
            var clock = Stopwatch.StartNew();
            await fixture.Management.HostFailedAsync(deposed, "judged failed by the test while it runs");
            var changed = await fixture.Management.GetMapAsync();
            var successor = changed.FindVolume(name)!.PlacementGroupOf(0).Primary;
            Assert.NotEqual(deposed, successor);
            // The activation that moved the group told the successor to wait for the deposed host.
            // (The map may move on meanwhile: the deposed host checks in again, as it was never down.)
            await _eventually.UntilAsync(async () =>
            {
                var epoch = (await fixture.Management.GetMapAsync()).Epoch;
                var refused = await Assert.ThrowsAsync<PrimaryLeaseException>(() => fixture.Server(successor).WriteAsync(new SegmentWrite(epoch, segment, 0, fresh, false)));
                return refused.Message.Contains("earlier primary", StringComparison.Ordinal);
            }, $"'{successor}' told to wait for '{deposed}'", TimeSpan.FromSeconds(5));

            // Another activation takes over, as after a failover: it writes the stored state back
            // (its fence); the old one finds the etag moved at its next grant and deactivates.
            var first = await fixture.Management.GetStatusAsync();
            await FenceAsIfAnotherActivationAsync();
            await _eventually.UntilAsync(async () =>
            {
                await fixture.Server(successor).LeaseReleasedAsync();
                return (await fixture.Management.GetStatusAsync()).ActivatedAt != first.ActivatedAt;
            }, "a new management activation", TimeSpan.FromSeconds(10));
            output.WriteLine($"management moved {clock.ElapsedMilliseconds} ms after '{deposed}' was judged failed");

            // The group's primary (the successor, or another one the new activation chose) renews
            // with the new activation until it serves the group.
            var refusals = new List<string>();
            await _eventually.UntilAsync(async () =>
            {
                var map = await fixture.Management.GetMapAsync();
                successor = map.FindVolume(name)!.PlacementGroupOf(0).Primary;
                await fixture.Server(successor).LeaseReleasedAsync();
                try
                {
                    await fixture.Server(successor).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, fresh, false));
                    return true;
                }
                catch (PrimaryLeaseException refused)
                {
                    refusals.Add($"{clock.ElapsedMilliseconds} ms: {refused.Message}");
                    throw;
                }
            }, "a write acknowledged by the group's primary", TimeSpan.FromSeconds(30));
            var acknowledgedAfter = clock.ElapsedMilliseconds;
            output.WriteLine($"{refusals.Count} refusals under the new activation, the first: {refusals.FirstOrDefault() ?? "none"}; the last: {refusals.LastOrDefault() ?? "none"}");

            // A client still on the old epoch goes to the deposed host: refused, never the old bytes.
            try
            {
                var served = (await fixture.Server(deposed).ReadAsync(new SegmentRead(readerEpoch, segment, 0, old.Length))).Bytes.ToArray();
                Assert.Fail($"'{deposed}' served {(served.SequenceEqual(old) ? "the old bytes" : "bytes")} at epoch {readerEpoch}, {clock.ElapsedMilliseconds} ms after it was deposed; '{successor}', leased by a new management activation, had acknowledged a write there at {acknowledgedAfter} ms");
            }
            catch (PrimaryLeaseException refused)
            {
                output.WriteLine($"'{successor}' acknowledged {acknowledgedAfter} ms after the change; then '{deposed}': {refused.Message}");
            }
        }
        finally
        {
            fixture.PushFilter.DeliverAll();
        }

        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => m.FindHost(deposed)!.State == HostState.Up && Healthy(m), $"'{deposed}' back and every group full", TimeSpan.FromSeconds(120));
        var back = new byte[fresh.Length];
        await writer.ReadAsync(0, back);
        Assert.Equal(fresh, back);
        await fixture.Client.DeleteVolumeAsync(name);
    }

    [SkippableFact]
    public async Task A_forward_held_past_a_map_change_and_a_copy_is_refused_and_the_new_replica_joins_with_every_acknowledged_write()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Healthy, "a healthy cluster before the test");
        var name = "race-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var writer = await fixture.Client.OpenVolumeAsync(name);
        var before = Replicas.RandomBytes(Segment, seed: 3);
        await writer.WriteAsync(0, before);
        var map = await fixture.Management.GetMapAsync();
        var volume = map.FindVolume(name)!;
        var group = volume.PlacementGroupOf(0);
        var (primary, replica) = (group.Replicas[0], group.Replicas[1]);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        output.WriteLine($"epoch {map.Epoch}: segment 0 on {primary} (primary) and {replica}");

        // The primary's forward reaches the replica, is admitted at this epoch, and then waits
        // (a slow network) while the map moves on and the replica, now primary, fills a new one.
        var held = fixture.ReplicaFaults.Hold(replica, segment);
        var write = fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(64 * 1024, seed: 4), false));
        await held.WaitAsync(TimeSpan.FromSeconds(30));
        await fixture.Management.HostFailedAsync(primary, "judged failed by the test while its forward is on the way");
        var filled = await _eventually.MapAsync(() => fixture.Management.GetMapAsync(),
            m => m.FindVolume(name)!.PlacementGroupOf(0) is var g && g.Replicas.Length == 2 && !g.Replicas.Contains(primary) && g.Pending.IsEmpty,
            "a new replica filled by the new primary while the forward is held", TimeSpan.FromSeconds(60));
        var joined = filled.FindVolume(name)!.PlacementGroupOf(0).Replicas.Single(h => h != replica);
        fixture.ReplicaFaults.Release(replica, segment);

        var acknowledged = true;
        try
        {
            await write;
        }
        catch (StaleEpochException ex)
        {
            acknowledged = false;
            output.WriteLine("the held forward was refused: " + ex.Message);
        }
        // Had the forward landed after the copy, the write would be acknowledged and missing on
        // the replica that just joined.
        Assert.False(acknowledged, "a forward admitted before the map change was applied after the copy had read the segment");
        var held1 = (await fixture.Server(replica).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        var held2 = (await fixture.Server(joined).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        Assert.Equal(before, held1);
        Assert.Equal(before, held2);
        // The deposed primary applied the refused write and reports the replicas that may now differ
        // from it (docs/failures.md, "Write versions"): one may be resynced, needlessly here, first.
        // The report may reach management after the group looked whole, so the check is repeated
        // until that resync, if any, is done: what must hold is that the replicas end up equal.
        List<string> differences = [];
        await _eventually.UntilAsync(async () =>
        {
            differences = [.. await (await fixture.Client.OpenVolumeAsync(name)).VerifyReplicasAsync()];
            return differences.Count == 0;
        }, "group 0 at full factor again with every replica equal", TimeSpan.FromSeconds(60), () => string.Join("; ", differences));

        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => m.FindHost(primary)!.State == HostState.Up && Healthy(m), $"'{primary}' back and every group full", TimeSpan.FromSeconds(120));
        await fixture.Client.DeleteVolumeAsync(name);
    }

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task An_evacuated_primary_serves_no_old_data_to_a_reader_still_on_its_epoch(bool newsDropped)
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Healthy, "a healthy cluster before the test");
        var name = "evacuated-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var deposed = (await MapAtRestAsync()).FindVolume(name)!.PlacementGroupOf(0).Primary;
        var writer = await fixture.Client.OpenVolumeAsync(name);
        await using var readerClient = await OstorClient.AttachAsync(fixture.Cluster.Client, new OstorClientOptions { SubscribeToMapChanges = false, RetryTimeout = TimeSpan.FromSeconds(2) });
        var reader = await readerClient.OpenVolumeAsync(name);
        var history = new RegisterHistory(0);
        Assert.True(await history.WriteNextAsync(writer));

        using var stop = new CancellationTokenSource();
        var running = history.RunAsync(writer, reader, stop.Token);
        await Task.Delay(TimeSpan.FromSeconds(1));
        if (newsDropped)
        {
            // It still hears of each step through the requests it serves as the group's primary
            // (the copies, the writer); of the last, that hands the group over, nothing.
            fixture.PushFilter.DropPushesTo(deposed);
        }
        try
        {
            await fixture.Management.EvacuateHostAsync(deposed);
            await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => !m.FindVolume(name)!.PlacementGroupOf(0).References(deposed),
                $"the block's group moved off '{deposed}'", TimeSpan.FromSeconds(120));
            await Task.Delay(TimeSpan.FromSeconds(10)); // past the deposed host's lease
        }
        finally
        {
            fixture.PushFilter.DeliverAll();
            await stop.CancelAsync();
            await running;
        }

        output.WriteLine($"'{deposed}' evacuated{(newsDropped ? " with its map news dropped" : "")}: {history.Writes} writes, {history.Reads} reads, {history.FailedReads} failed reads; longest write {history.LongestWrite.TotalMilliseconds:0} ms, longest read {history.LongestRead.TotalMilliseconds:0} ms");
        foreach (var error in history.ReadErrors().Take(3))
        {
            output.WriteLine("read error: " + error);
        }
        var violations = history.Violations();
        Assert.True(violations.Count == 0, $"{violations.Count} stale reads, e.g. {string.Join("; ", violations.Take(3))}");

        // Leave the cluster as it was: the evacuated host leaves the map, restarts and joins again.
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => Eventually.GroupsFull(m) && !m.AllGroups().Any(x => x.Group.References(deposed)),
            $"every group moved off '{deposed}'", TimeSpan.FromSeconds(120));
        await fixture.Management.RemoveHostAsync(deposed);
        await fixture.KillHostAsync(deposed);
        Assert.Equal(deposed, await fixture.StartSiloAsync(deposed));
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => m.FindHost(deposed)?.State == HostState.Up && Healthy(m), $"'{deposed}' joined again", TimeSpan.FromSeconds(120));
        await fixture.Client.DeleteVolumeAsync(name);
    }

    [SkippableFact]
    public async Task Primaries_moved_by_a_rebalance_serve_no_old_data_to_a_reader_still_on_their_epoch()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Healthy, "a healthy cluster before the test");
        var name = "rebalanced-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var before = (await MapAtRestAsync()).FindVolume(name)!;
        var writer = await fixture.Client.OpenVolumeAsync(name);
        await using var readerClient = await OstorClient.AttachAsync(fixture.Cluster.Client, new OstorClientOptions { SubscribeToMapChanges = false, RetryTimeout = TimeSpan.FromSeconds(2) });
        var reader = await readerClient.OpenVolumeAsync(name);
        // A register in every segment (one per group): whichever groups the rebalance moves, a
        // writer and a reader on the epoch from before it are at work on them.
        var histories = Enumerable.Range(0, (int)before.SegmentCount).Select(s => new RegisterHistory(s * (long)Segment)).ToArray();
        foreach (var history in histories)
        {
            Assert.True(await history.WriteNextAsync(writer));
        }

        using var stop = new CancellationTokenSource();
        var running = Task.WhenAll(histories.Select(h => h.RunAsync(writer, reader, stop.Token)));
        string joined;
        try
        {
            joined = await fixture.StartSiloAsync();
            await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => m.FindHost(joined)?.State == HostState.Up, $"'{joined}' joined");
            for (var step = 0; step < 10; step++)
            {
                var planned = await fixture.Management.GetMapAsync();
                if ((await fixture.Management.RebalanceAsync()).Epoch == planned.Epoch)
                {
                    break;
                }
                await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.GroupsFull, "rebalance step finished");
            }
            await Task.Delay(TimeSpan.FromSeconds(2));
        }
        finally
        {
            await stop.CancelAsync();
            await running;
        }

        var after = (await fixture.Management.GetMapAsync()).FindVolume(name)!;
        var moved = before.PlacementGroups.Count(g => after.PlacementGroups[g.Index].Primary != g.Primary);
        output.WriteLine($"'{joined}' joined; the rebalance moved the primary of {moved} of {before.PlacementGroups.Length} groups; {histories.Sum(h => h.Writes)} writes, {histories.Sum(h => h.Reads)} reads, {histories.Sum(h => h.FailedReads)} failed reads; longest write {histories.Max(h => h.LongestWrite).TotalMilliseconds:0} ms, longest read {histories.Max(h => h.LongestRead).TotalMilliseconds:0} ms");
        Assert.True(moved > 0, "the rebalance moved no primary of the test's volume");
        var violations = histories.SelectMany(h => h.Violations()).ToList();
        Assert.True(violations.Count == 0, $"{violations.Count} stale reads, e.g. {string.Join("; ", violations.Take(3))}");

        // Leave the cluster as it was: the new host goes again, through evacuation.
        await fixture.Management.EvacuateHostAsync(joined);
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), m => Eventually.GroupsFull(m) && !m.AllGroups().Any(x => x.Group.References(joined)), $"'{joined}' evacuated", TimeSpan.FromSeconds(120));
        await fixture.Management.RemoveHostAsync(joined);
        await fixture.KillHostAsync(joined);
        await fixture.Client.DeleteVolumeAsync(name);
    }

    /// <summary>Writes the management service's stored state back unchanged, straight to PostgreSQL: it moves the etag, as a new activation's fence does.</summary>
    private async Task FenceAsIfAnotherActivationAsync()
    {
        var silo = fixture.Cluster.Silos.OfType<InProcessSiloHandle>().First(s => s.IsActive);
        var store = silo.SiloHost.Services.GetRequiredKeyedService<IGrainStorage>(StorageNames.ClusterStore);
        var grainId = GrainId.Create("ostor-management", IManagementServiceGrain.DefaultKey);
        for (var attempt = 1; ; attempt++)
        {
            var stored = new GrainState<ManagementState>(new ManagementState());
            await store.ReadStateAsync("cluster", grainId, stored);
            try
            {
                await store.WriteStateAsync("cluster", grainId, stored);
                return;
            }
            catch (InconsistentStateException) when (attempt < 10)
            {
                // The map changed between our read and write (the deposed host checking in): read it again.
            }
        }
    }

    /// <summary>Primary balancing may still reorder a new volume's groups: the map once it stopped moving.</summary>
    private async Task<ClusterMap> MapAtRestAsync()
    {
        var atRest = await fixture.Management.GetMapAsync();
        await _eventually.UntilAsync(async () =>
        {
            await Task.Delay(1500);
            var again = await fixture.Management.GetMapAsync();
            (var unchanged, atRest) = (again.Epoch == atRest.Epoch, again);
            return unchanged;
        }, "the map at rest");
        return atRest;
    }

    private static bool Healthy(ClusterMap map) => Eventually.Healthy(map);
}
