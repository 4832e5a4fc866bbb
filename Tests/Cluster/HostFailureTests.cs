using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.TestingHost;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Hosting;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Four hosts with fast failure detection (probes every second, two missed declare a silo dead)
/// and a short grace period, so hosts can die, return, join and leave within a test.
/// </summary>
public sealed class FailureClusterFixture : StorageClusterFixture
{
    private TimeSpan _gracePeriod = TimeSpan.FromSeconds(4);
    private bool _autoRebalance;

    protected override int InitialHosts => 4;

    protected override void ConfigureSilo(ISiloBuilder silo)
    {
        silo.Configure<ClusterMembershipOptions>(o =>
        {
            o.ProbeTimeout = TimeSpan.FromSeconds(1);
            o.NumMissedProbesLimit = 2;
            o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
        });
        silo.Services.Configure<ManagementOptions>(o =>
        {
            o.DownGracePeriod = _gracePeriod;
            o.AutoRebalance = _autoRebalance;
            o.MembershipSettleTime = TimeSpan.FromSeconds(2);
            o.ReconcileInterval = TimeSpan.FromMilliseconds(500);
        });
        silo.Services.Configure<StorageServerOptions>(o => o.RegistrationInterval = TimeSpan.FromSeconds(1));
    }

    /// <summary>Turns automatic rebalancing on or off on every running silo and for silos started later.</summary>
    public void SetAutoRebalance(bool enabled)
    {
        _autoRebalance = enabled;
        foreach (var silo in Cluster.Silos.OfType<InProcessSiloHandle>())
        {
            silo.SiloHost.Services.GetRequiredService<IOptions<ManagementOptions>>().Value.AutoRebalance = enabled;
        }
    }

    /// <summary>Sets the grace period on every running silo (whichever holds the management service) and for silos started later.</summary>
    public void SetGracePeriod(TimeSpan gracePeriod)
    {
        _gracePeriod = gracePeriod;
        foreach (var silo in Cluster.Silos.OfType<InProcessSiloHandle>())
        {
            silo.SiloHost.Services.GetRequiredService<IOptions<ManagementOptions>>().Value.DownGracePeriod = gracePeriod;
        }
    }
}

[CollectionDefinition(Name)]
public sealed class FailureClusterCollection : ICollectionFixture<FailureClusterFixture>
{
    public const string Name = "failure cluster";
}

/// <summary>
/// Hosts fail, return, join and leave while a writer runs the whole time; a checker then reads
/// every acknowledged write back and compares every replica. Part of the writers use a client
/// that never follows map pushes: it only learns of changes from stale-epoch rejections.
/// </summary>
[Collection(FailureClusterCollection.Name)]
public sealed class HostFailureTests(FailureClusterFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
    private const int Segment = StorageClusterFixture.SegmentSize;
    private readonly Eventually _eventually = new(output);
    private OstorClient? _staleClient;

    public async Task InitializeAsync()
    {
        if (!fixture.Available)
        {
            return;
        }
        await WaitForMapAsync(Healthy, "a healthy cluster before the test");
        _staleClient = await OstorClient.AttachAsync(fixture.Cluster.Client, new OstorClientOptions { SubscribeToMapChanges = false });
    }

    public async Task DisposeAsync()
    {
        if (_staleClient is not null)
        {
            await _staleClient.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task A_host_whose_fsync_fails_stops_serving_never_reports_a_later_flush_and_returns_refilled()
    {
        fixture.SkipIfUnavailable();
        var loaded = await StartLoadAsync(("fsync-f2", 2), ("fsync-f3", 3));
        var load = loaded.Load;
        var victim = await PickVictimAsync();
        var volume = (await fixture.Management.GetMapAsync()).FindVolume("fsync-f2")!;

        fixture.DiskFaults.FailFsyncOn(victim);
        var failed = await Assert.ThrowsAsync<DiskFailedException>(() => FlushAtCurrentEpochAsync(victim, volume.VolumeId));
        output.WriteLine(failed.Message);
        // fsyncgate: the disk "healing" must not turn a later flush into a success over lost pages.
        fixture.DiskFaults.Heal(victim);
        await Assert.ThrowsAsync<DiskFailedException>(() => FlushAtCurrentEpochAsync(victim, volume.VolumeId));

        // Fail-stop: the host is Out (it stopped checking in), its groups are refilled elsewhere, I/O goes on.
        var outMap = await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Out, $"'{victim}' Out after its disk failed");
        Assert.All(outMap.AllGroups(), x => Assert.DoesNotContain(victim, x.Group.Replicas));
        await load.WaitForProgressAsync(50);
        await (await fixture.Client.OpenVolumeAsync("fsync-f2")).FlushAsync(); // on the hosts that still serve
        await WaitForMapAsync(GroupsFull, "every group back at full factor without the failed host", TimeSpan.FromSeconds(120));
        await StopAndVerifyAsync(loaded);

        // Restarted, it comes back empty and serves only what it is refilled with.
        await fixture.KillHostAsync(victim);
        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Up, $"'{victim}' back Up");
        await WaitUntilAsync(async () => (await fixture.Server(victim).GetStatusAsync()).SegmentFiles == 0, $"'{victim}' dropped its untrusted segment files");
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task A_host_whose_disk_turns_read_only_goes_out_within_a_few_epochs_and_clients_see_no_error()
    {
        fixture.SkipIfUnavailable();
        Prerequisites.Require(Environment.UserName == "root", "chattr +i needs root");
        var loaded = await StartLoadAsync(("ro-f2", 2), ("ro-f3", 3));
        // Counted from a quiet map: what an earlier test of this cluster set going (its returned
        // host getting primaries back, one epoch each) is not this failure's (CI-like run: 28).
        var quiet = await WaitForQuietMapAsync();
        var victim = await PickVictimAsync();
        var volumes = Path.Combine(fixture.DataDirectoryOf(victim), "volumes");
        var before = (await fixture.Management.GetMapAsync()).Epoch;
        output.WriteLine($"victim {victim}, map quiet at epoch {quiet.Epoch}, failing its disk at epoch {before}");

        // The disk refuses every write from now on (EPERM, also through open files), as a file
        // system remounted read-only after errors does.
        await ExternalProgram.RunAsync("chattr", ["-R", "+i", volumes]);
        try
        {
            var outMap = await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Out, $"'{victim}' Out after its disk refused writes");
            Assert.All(outMap.AllGroups(), x => Assert.DoesNotContain(victim, x.Group.Replicas));
            var whole = await WaitForMapAsync(GroupsFull, "every group back at full factor without the read-only host", TimeSpan.FromSeconds(120));
            output.WriteLine($"epoch {before} -> {whole.Epoch} from the failure to full factor");
            Assert.True(whole.Epoch - before < 10, $"the epoch moved {whole.Epoch - before} times for one failed disk");
            // The load's clients saw no error: every write was acknowledged (after retries) and reads back.
            await StopAndVerifyAsync(loaded);
        }
        finally
        {
            await ExternalProgram.RunAsync("chattr", ["-R", "-i", volumes]);
        }

        // With its disk writable again and restarted, it comes back empty.
        await fixture.KillHostAsync(victim);
        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Up, $"'{victim}' back Up");
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task Killed_host_loses_no_acknowledged_write_and_its_groups_regain_their_factor()
    {
        fixture.SkipIfUnavailable();
        fixture.SetGracePeriod(TimeSpan.FromSeconds(4));
        var loaded = await StartLoadAsync(("kill-f2", 2), ("kill-f3", 3));
        var load = loaded.Load;

        var victim = await PickVictimAsync();
        var before = await fixture.Management.GetMapAsync();
        var killedAt = DateTimeOffset.UtcNow;
        await fixture.KillHostAsync(victim);

        var down = await WaitForMapAsync(m => m.FindHost(victim)!.State != HostState.Up, $"'{victim}' marked Down");
        Assert.True(down.Epoch > before.Epoch);
        Assert.All(down.AllGroups(), x => Assert.DoesNotContain(victim, x.Group.Replicas));
        await load.WaitForProgressAsync(50); // I/O goes on without the victim

        var recovered = await WaitForMapAsync(
            m => m.FindHost(victim)!.State == HostState.Out && GroupsFull(m),
            $"'{victim}' Out and every group back at full factor", TimeSpan.FromSeconds(120));
        Assert.All(recovered.AllGroups(), x => Assert.False(x.Group.References(victim)));
        await StopAndVerifyAsync(loaded);

        var copies = await FinishedCopiesAsync(c => !c.Job.Resync && c.Started >= killedAt);
        Assert.NotEmpty(copies);
        var bytes = copies.Sum(c => c.BytesCopied);
        var seconds = (copies.Max(c => c.Finished!.Value) - copies.Min(c => c.Started)).TotalSeconds;
        output.WriteLine($"failover: max write latency {load.MaxLatency.TotalMilliseconds:0} ms over {load.Acknowledged} acknowledged writes");
        output.WriteLine($"re-replication: {copies.Count} copies, {bytes / 1048576.0:0.0} MiB in {seconds:0.0} s = {bytes / 1048576.0 / Math.Max(seconds, 0.001):0.0} MiB/s");

        // The host returns after it was Out: it joins empty and drops its stale segment files.
        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Up, $"'{victim}' back Up");
        await WaitUntilAsync(async () => (await fixture.Server(victim).GetStatusAsync()).SegmentFiles == 0, $"'{victim}' removed its stale segment files");
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task Host_returning_within_the_grace_period_is_resynced_with_only_what_changed()
    {
        fixture.SkipIfUnavailable();
        fixture.SetGracePeriod(TimeSpan.FromMinutes(10));
        var volumeSize = 64L * Segment;
        await fixture.Client.CreateVolumeAsync("resync", volumeSize, 2);
        var handle = await fixture.Client.OpenVolumeAsync("resync");
        var initial = Replicas.RandomBytes((int)volumeSize, seed: 7);
        await handle.WriteAsync(0, initial);
        // The victim is killed as by kill -9 (no clean shutdown): it returns with the segments its
        // write intents name suspect, and those are copied whatever their versions say. The initial
        // write settles first, as on a host that crashes long after its last flush: flushed, then
        // its intents cleared by a flush once the store's clear delay has passed.
        await handle.FlushAsync();
        await Task.Delay(Segments.SegmentStore.DefaultIntentClearDelay + TimeSpan.FromSeconds(1));
        // Straight to every host: the library flushes only hosts written to since its last flush.
        var settling = await fixture.Management.GetMapAsync();
        foreach (var host in settling.Hosts.Where(h => h.State == HostState.Up))
        {
            await FlushAtCurrentEpochAsync(host.HostId, handle.VolumeId);
        }

        // The writer touches only the first 16 segments, one per placement group, so the victim
        // surely misses some writes; the other 48 stay as they were.
        var load = new LoadRunner();
        load.Add(handle, [handle, await _staleClient!.OpenVolumeAsync("resync")], writeLength: 16L * Segment, initial: initial);
        var loaded = await StartAsync(load, ["resync"]);

        var victim = await PickVictimAsync();
        // Writes in flight when the host dies started a little earlier; a second covers them.
        var killMark = LoadRunner.Clock - System.Diagnostics.Stopwatch.Frequency;
        await fixture.KillHostAsync(victim);
        var down = await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Down, $"'{victim}' marked Down");
        var volume = down.FindVolume("resync")!;
        var heldGroups = volume.PlacementGroups.Where(pg => pg.Absent.Contains(victim)).Select(pg => pg.Index).ToHashSet();
        Assert.NotEmpty(heldGroups);
        await load.WaitForProgressAsync(50); // writes the victim misses

        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        var back = await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Up && GroupsFull(m), $"'{victim}' resynced and back in its groups");
        Assert.All(back.FindVolume("resync")!.PlacementGroups.Where(pg => heldGroups.Contains(pg.Index)), pg => Assert.Contains(victim, pg.Replicas));
        await StopAndVerifyAsync(loaded);

        var resyncs = await FinishedCopiesAsync(c => c.Job.Resync && c.Job.TargetHostId == victim && c.Job.VolumeId == volume.VolumeId && c.StartEpoch > down.Epoch);
        var copied = resyncs.Sum(c => c.SegmentsCopied);
        var total = volume.SegmentCount * heldGroups.Count / volume.PlacementGroups.Length;
        var changed = load.SegmentsWrittenSince(killMark, Segment).Count(s => heldGroups.Contains((int)(s.Segment % volume.PlacementGroups.Length)));
        // Written while it was away, or suspect: written by the load shortly before the kill.
        var loadWrote = Enumerable.Range(0, 16).Count(s => heldGroups.Contains(s % volume.PlacementGroups.Length));
        output.WriteLine($"resync of '{victim}': {copied} segments copied of {total} it holds; {changed} of them were written since it went down, {loadWrote} by the load at all");
        Assert.True(copied > 0, "nothing was copied, yet the victim missed writes");
        Assert.True(copied <= loadWrote, $"{copied} segments copied but only {loadWrote} were written by the load ({changed} while '{victim}' was away); the others were settled before the kill");
        Assert.True(copied < total);
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task New_host_joins_and_rebalance_under_load_spreads_groups_to_it()
    {
        fixture.SkipIfUnavailable();
        var loaded = await StartLoadAsync(("grow", 2));

        var joined = await fixture.StartSiloAsync();
        var map = await WaitForMapAsync(m => m.FindHost(joined)?.State == HostState.Up, $"'{joined}' joined");
        Assert.DoesNotContain(map.AllGroups(), x => x.Group.References(joined)); // it joins empty

        for (var step = 0; step < 20; step++)
        {
            var before = await fixture.Management.GetMapAsync();
            var after = await fixture.Management.RebalanceAsync();
            if (after.Epoch == before.Epoch)
            {
                if (!after.IsMoving())
                {
                    break; // nothing left to even out
                }
                // A step plans nothing while replicas are being filled: under load, a replica that
                // refused a forward during the last step's map change is resynced first.
                await WaitForMapAsync(m => !m.IsMoving(), "resyncs finished before the next step");
                continue;
            }
            await WaitForMapAsync(GroupsFull, "rebalance step finished");
        }
        map = await fixture.Management.GetMapAsync();
        // The planner evens each volume on its own (a volume's I/O spreads over its groups); other
        // tests' volumes in the shared cluster weigh only on its tie-breaks, so totals are printed, not judged.
        var volume = map.Volumes.Single(v => v.Name == "grow");
        var perHost = map.PlacementHostIds().ToDictionary(h => h, h => volume.PlacementGroups.Count(pg => pg.Replicas.Contains(h)));
        var totals = map.AllGroups().SelectMany(x => x.Group.Replicas).GroupBy(h => h).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine("replicas of 'grow' per host after rebalance: " + string.Join(", ", perHost.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}={kv.Value}")));
        output.WriteLine("replicas of every volume per host: " + string.Join(", ", totals.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}={kv.Value}")));
        Assert.True(perHost.GetValueOrDefault(joined) > 0, $"no group of 'grow' moved to '{joined}'");
        Assert.True(perHost.Values.Max() - perHost.Values.Min() <= 1, "the replicas of 'grow' are not even after rebalance");

        await StopAndVerifyAsync(loaded);
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task With_automatic_rebalance_a_new_host_gets_groups_on_its_own()
    {
        fixture.SkipIfUnavailable();
        var loaded = await StartLoadAsync(("auto", 2));
        fixture.SetAutoRebalance(true);
        try
        {
            var joined = await fixture.StartSiloAsync();
            await WaitForMapAsync(m => m.AllGroups().Count(x => x.Group.Contains(joined)) >= 2 && GroupsFull(m), $"'{joined}' given groups without being asked", TimeSpan.FromSeconds(120));
            await StopAndVerifyAsync(loaded);

            // Leave the cluster as it was: the new host goes again, through evacuation.
            fixture.SetAutoRebalance(false);
            await fixture.Management.EvacuateHostAsync(joined);
            await WaitForMapAsync(m => GroupsFull(m) && !m.AllGroups().Any(x => x.Group.References(joined)), $"'{joined}' evacuated");
            await fixture.Management.RemoveHostAsync(joined);
            await fixture.KillHostAsync(joined);
        }
        finally
        {
            fixture.SetAutoRebalance(false);
        }
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task Evacuated_host_holds_nothing_and_is_removed_with_data_intact()
    {
        fixture.SkipIfUnavailable();
        var loaded = await StartLoadAsync(("evac-f2", 2), ("evac-f3", 3));

        var victim = await PickVictimAsync();
        await Assert.ThrowsAsync<InvalidRequestException>(() => fixture.Management.RemoveHostAsync(victim));
        await fixture.Management.EvacuateHostAsync(victim);
        await WaitForMapAsync(m => GroupsFull(m) && !m.AllGroups().Any(x => x.Group.References(victim)), $"every group moved off '{victim}'", TimeSpan.FromSeconds(120));
        var removed = await fixture.Management.RemoveHostAsync(victim);
        Assert.Null(removed.FindHost(victim));

        await StopAndVerifyAsync(loaded);
        await WaitUntilAsync(async () => (await fixture.Server(victim).GetStatusAsync()).SegmentFiles == 0, $"'{victim}' dropped the files it no longer holds");

        // A removed host does not come back on its own; once its silo restarts it joins again, empty.
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.Null((await fixture.Management.GetMapAsync()).FindHost(victim));
        await fixture.KillHostAsync(victim);
        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        await WaitForMapAsync(m => m.FindHost(victim)?.State == HostState.Up, $"'{victim}' joined again");
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task Management_service_fails_over_with_its_epoch_and_stale_requests_are_rejected_and_counted()
    {
        fixture.SkipIfUnavailable();
        fixture.SetGracePeriod(TimeSpan.FromMinutes(10));
        var loaded = await StartLoadAsync(("mgmt", 2));
        var load = loaded.Load;

        // The map must be at rest (automatic primary balancing may still be at work) so that the
        // epoch read here is the last one written before the kill.
        var managementHost = (await fixture.HostsByManagementAsync()).Management;
        ManagementStatus status = await fixture.Management.GetStatusAsync();
        await WaitUntilAsync(async () =>
        {
            await Task.Delay(1500);
            var again = await fixture.Management.GetStatusAsync();
            (var unchanged, status) = (again.Epoch == status.Epoch, again);
            return unchanged;
        }, "the map at rest");
        await fixture.KillHostAsync(managementHost);

        ManagementStatus? moved = null;
        await WaitUntilAsync(async () =>
        {
            moved = await fixture.Management.GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(5));
            return moved.Silo != status.Silo;
        }, "the management service re-activated on another silo");
        Assert.Equal(status.Epoch, moved!.ActivatedAtEpoch); // same map, same epoch, loaded from PostgreSQL
        await WaitForMapAsync(m => m.FindHost(managementHost)!.State == HostState.Down, $"'{managementHost}' marked Down by the new activation");
        await load.WaitForProgressAsync(50);

        Assert.Equal(managementHost, await fixture.StartSiloAsync(managementHost));
        await WaitForMapAsync(m => m.FindHost(managementHost)!.State == HostState.Up && GroupsFull(m), $"'{managementHost}' back");
        await StopAndVerifyAsync(loaded);

        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task Live_replica_that_misses_writes_is_resynced_before_it_serves_again()
    {
        fixture.SkipIfUnavailable();
        var loaded = await StartLoadAsync(("missed", 2));

        var victim = await PickVictimAsync();
        var since = DateTimeOffset.UtcNow;
        fixture.ReplicaFaults.FailNext(victim, 5);
        await WaitUntilAsync(() => Task.FromResult(fixture.ReplicaFaults.Remaining(victim) == 0), $"'{victim}' failed 5 forwarded writes");
        await WaitUntilAsync(async () => (await FinishedCopiesAsync(c => c.Job.Resync && c.Job.TargetHostId == victim && c.Started >= since)).Count > 0,
            $"'{victim}' resynced by the primaries whose writes it missed");
        await WaitForMapAsync(GroupsFull, $"'{victim}' back in every acting set");
        await StopAndVerifyAsync(loaded);

        var resyncs = await FinishedCopiesAsync(c => c.Job.Resync && c.Job.TargetHostId == victim && c.Started >= since);
        output.WriteLine($"'{victim}' missed writes in {resyncs.Select(c => c.Job.GroupIndex).Distinct().Count()} groups; resyncs copied {resyncs.Sum(c => c.SegmentsCopied)} segments");
        Assert.True(resyncs.Sum(c => c.SegmentsCopied) >= 1);
        Assert.Equal(HostState.Up, (await fixture.Management.GetMapAsync()).FindHost(victim)!.State); // never judged Down: it was alive
        await CleanUpAsync(loaded);
    }

    [SkippableFact]
    public async Task Group_with_no_replica_left_fails_as_unavailable_then_serves_again_when_its_host_returns()
    {
        fixture.SkipIfUnavailable();
        fixture.SetGracePeriod(TimeSpan.FromMinutes(10));
        var volume = await fixture.Client.CreateVolumeAsync("single", 16L * Segment, 1);
        var handle = await fixture.Client.OpenVolumeAsync("single");
        var data = Replicas.RandomBytes(16 * Segment, seed: 11);
        await handle.WriteAsync(0, data);

        var victim = await PickVictimAsync();
        var lost = Enumerable.Range(0, 16).First(i => volume.PlacementGroupOf(i).Primary == victim);
        var kept = Enumerable.Range(0, 16).First(i => volume.PlacementGroupOf(i).Primary != victim);
        await fixture.KillHostAsync(victim);
        await WaitForMapAsync(m => m.FindHost(victim)!.State == HostState.Down, $"'{victim}' marked Down");

        await using var impatient = await OstorClient.AttachAsync(fixture.Cluster.Client, new OstorClientOptions { RetryTimeout = TimeSpan.FromSeconds(2) });
        var single = await impatient.OpenVolumeAsync("single");
        var buffer = new byte[4096];
        var failure = await Assert.ThrowsAsync<StorageException>(() => single.ReadAsync((long)lost * Segment, buffer));
        Assert.Contains("unavailable", failure.Message, StringComparison.Ordinal);
        Assert.Contains(victim, failure.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<StorageException>(() => single.WriteAsync((long)lost * Segment, new byte[4096]));
        await single.ReadAsync((long)kept * Segment, buffer); // the other groups serve on
        Assert.True(data.AsSpan(kept * Segment, 4096).SequenceEqual(buffer));

        // Its only copy comes back with it: the group serves again, with the data it had.
        Assert.Equal(victim, await fixture.StartSiloAsync(victim));
        await WaitForMapAsync(m => m.FindVolume("single")!.PlacementGroupOf(lost).IsAvailable, $"'{victim}' took its groups back");
        var back = new byte[16 * Segment];
        await (await fixture.Client.OpenVolumeAsync("single")).ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back), "the volume changed across the outage");
        await DeleteVolumesAsync("single");
    }

    /// <summary>The test's volumes under the writer, and the map from before the test changed anything: what a stale client holds.</summary>
    private sealed record Loaded(LoadRunner Load, ClusterMap OldMap, string[] Volumes);

    /// <summary>Creates and fills 32-segment volumes, then starts the writer on them.</summary>
    private async Task<Loaded> StartLoadAsync(params (string Name, int Factor)[] volumes)
    {
        var load = new LoadRunner();
        foreach (var (name, factor) in volumes)
        {
            await AddVolumeAsync(load, name, 32L * Segment, factor);
        }
        return await StartAsync(load, [.. volumes.Select(v => v.Name)]);
    }

    private async Task<Loaded> StartAsync(LoadRunner load, string[] volumes)
    {
        var oldMap = await fixture.Management.GetMapAsync();
        load.Start();
        await load.WaitForProgressAsync();
        return new Loaded(load, oldMap, volumes);
    }

    /// <summary>Lets the writer go on a little, stops it, and checks every acknowledged write, through the client and on every replica.</summary>
    private async Task StopAndVerifyAsync(Loaded loaded)
    {
        await loaded.Load.WaitForProgressAsync(20);
        await loaded.Load.StopAsync();
        // A forward refused across a map change under load has its replica resynced (docs/failures.md,
        // "Write versions"): the replicas are compared once every group is whole again.
        await WaitForMapAsync(GroupsFull, "every group whole again before its replicas are compared");
        await loaded.Load.VerifyAsync(fixture.Cluster.Client);
    }

    /// <summary>The stale client's requests are rejected and counted; then the test's volumes go.</summary>
    private async Task CleanUpAsync(Loaded loaded)
    {
        await AssertOldMapRejectedAndCountedAsync(loaded.OldMap, loaded.Volumes[0]);
        await DeleteVolumesAsync(loaded.Volumes);
    }

    /// <summary>
    /// A client still holding <paramref name="oldMap"/>, from before the test changed the cluster:
    /// every read and write it sends to any host is rejected as stale (never served from the wrong
    /// place) and counted by management, one report each.
    /// </summary>
    private async Task AssertOldMapRejectedAndCountedAsync(ClusterMap oldMap, string volumeName)
    {
        var current = await fixture.Management.GetMapAsync();
        Assert.True(current.Epoch > oldMap.Epoch, "the test did not change the map");
        var volume = oldMap.FindVolume(volumeName)!;
        var handle = await fixture.Client.OpenVolumeAsync(volumeName);
        var before = new byte[4096];
        await handle.ReadAsync(0, before);

        // Counted per host, at least the two each rejected: the cluster's own traffic (a forward
        // that crossed a map change, a server behind the map) may add reports of its own meanwhile.
        var reportsBefore = (await fixture.Management.GetHostsAsync()).ToDictionary(h => h.Host.HostId, h => h.MismatchReports);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        var rejectedBy = current.Hosts.Where(h => h.State == HostState.Up).Select(h => h.HostId).ToList();
        foreach (var host in rejectedBy)
        {
            await Assert.ThrowsAsync<StaleEpochException>(() => fixture.Server(host).ReadAsync(new SegmentRead(oldMap.Epoch, segment, 0, 4096)));
            await Assert.ThrowsAsync<StaleEpochException>(() => fixture.Server(host).WriteAsync(new SegmentWrite(oldMap.Epoch, segment, 0, new byte[4096], false)));
        }
        IReadOnlyList<HostReport> reports = [];
        await _eventually.UntilAsync(async () =>
            {
                reports = await fixture.Management.GetHostsAsync();
                return rejectedBy.All(id => reports.Single(r => r.Host.HostId == id).MismatchReports - reportsBefore.GetValueOrDefault(id) >= 2);
            },
            $"the two stale requests each of {rejectedBy.Count} hosts rejected counted",
            describe: () => "reports since the requests: " + string.Join(", ", reports.Select(r => $"{r.Host.HostId}={r.MismatchReports - reportsBefore.GetValueOrDefault(r.Host.HostId)}")));
        var after = new byte[4096];
        await handle.ReadAsync(0, after);
        Assert.True(before.AsSpan().SequenceEqual(after), "a stale write landed");
    }

    private async Task AddVolumeAsync(LoadRunner load, string name, long size, int factor)
    {
        await fixture.Client.CreateVolumeAsync(name, size, factor);
        var handle = await fixture.Client.OpenVolumeAsync(name);
        var initial = Replicas.RandomBytes((int)size, seed: name.Length * 31 + factor);
        await handle.WriteAsync(0, initial);
        load.Add(handle, [handle, await _staleClient!.OpenVolumeAsync(name)], initial: initial);
    }

    /// <summary>A host to kill or evacuate: one that does not run the management service (that has a test of its own).</summary>
    private Task<string> PickVictimAsync() => fixture.PickVictimAsync();

    private async Task<List<CopyProgress>> FinishedCopiesAsync(Func<CopyProgress, bool> which)
    {
        var map = await fixture.Management.GetMapAsync();
        var copies = new List<CopyProgress>();
        foreach (var host in map.Hosts.Where(h => h.State == HostState.Up))
        {
            var status = await fixture.Server(host.HostId).GetStatusAsync();
            copies.AddRange(status.FinishedCopies.Where(c => c.Failure is null && which(c)));
        }
        return copies;
    }

    private async Task DeleteVolumesAsync(params string[] names)
    {
        foreach (var name in names)
        {
            await fixture.Client.DeleteVolumeAsync(name);
        }
    }

    private static bool GroupsFull(ClusterMap map) => Eventually.GroupsFull(map);

    private static bool Healthy(ClusterMap map) => Eventually.Healthy(map);

    private Task<ClusterMap> WaitForMapAsync(Func<ClusterMap, bool> condition, string what, TimeSpan? timeout = null) =>
        _eventually.MapAsync(() => fixture.Management.GetMapAsync(), condition, what, timeout);

    /// <summary>The map once it is healthy and its epoch has stayed put for 3 s (polled; 120 s at most).</summary>
    private async Task<ClusterMap> WaitForQuietMapAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        var map = await fixture.Management.GetMapAsync();
        var since = DateTime.UtcNow;
        while (true)
        {
            await Task.Delay(500);
            var next = await fixture.Management.GetMapAsync();
            if (next.Epoch != map.Epoch || !Healthy(next))
            {
                (map, since) = (next, DateTime.UtcNow);
            }
            else if (DateTime.UtcNow - since >= TimeSpan.FromSeconds(3))
            {
                return next;
            }
            Assert.True(DateTime.UtcNow < deadline, $"the map did not settle in 120 s: {Eventually.Describe(next)}");
        }
    }

    private Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) =>
        _eventually.UntilAsync(condition, what, timeout);

    /// <summary>
    /// A flush straight to one host at the map's current epoch. The failed host going Out moves
    /// the epoch meanwhile; a stale-epoch answer is asked again at the new one, so that the
    /// answer judged is the disk's.
    /// </summary>
    private async Task FlushAtCurrentEpochAsync(string hostId, Guid volumeId)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await fixture.Server(hostId).FlushAsync((await fixture.Management.GetMapAsync()).Epoch, volumeId);
                return;
            }
            catch (StaleEpochException) when (attempt < 10)
            {
            }
        }
    }
}
