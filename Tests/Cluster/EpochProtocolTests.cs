using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Storage;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>The configuration-identifier protocol of docs/epoch-protocol.md, observed from outside.</summary>
[Collection(StorageClusterCollection.Name)]
public sealed class EpochProtocolTests(StorageClusterFixture fixture)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task Write_with_older_epoch_is_rejected_with_the_server_epoch_and_counted_as_a_mismatch()
    {
        fixture.SkipIfUnavailable();
        var name = "stale-" + Guid.NewGuid().ToString("N")[..12];
        var volume = await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 1);
        await fixture.Client.CreateVolumeAsync(name + "-bump", 4096, 1); // one more epoch
        var map = await fixture.Client.GetMapAsync();
        var primary = map.FindVolume(volume.VolumeId)!.PlacementGroupOf(0).Primary;
        var server = fixture.Server(primary);
        await WaitUntilAsync(async () => (await server.GetStatusAsync()).Epoch == map.Epoch);
        var reportsBefore = await MismatchReportsAsync(primary);

        var stale = await Assert.ThrowsAsync<StaleEpochException>(() =>
            server.WriteAsync(new SegmentWrite(map.Epoch - 1, new SegmentAddress(volume.VolumeId, 0), 0, new byte[4096], false)));

        Assert.Equal(map.Epoch - 1, stale.RequestEpoch);
        Assert.Equal(map.Epoch, stale.ServerEpoch);
        Assert.Equal(primary, stale.HostId);
        await WaitUntilAsync(async () => await MismatchReportsAsync(primary) > reportsBefore);
        // Nothing was written.
        var held = (await server.ReadLocalAsync(new SegmentAddress(volume.VolumeId, 0), 0, 4096)).Bytes;
        Assert.All(held.ToArray(), b => Assert.Equal(0, b));
    }

    [SkippableFact]
    public async Task Request_to_a_host_outside_the_replica_set_is_misdirected()
    {
        fixture.SkipIfUnavailable();
        var name = "misdirect-" + Guid.NewGuid().ToString("N")[..12];
        var volume = await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 1);
        var map = await fixture.Client.GetMapAsync();
        var group = volume.PlacementGroupOf(0);
        var stranger = map.Hosts.Select(h => h.HostId).First(h => !group.Contains(h));
        await WaitUntilAsync(async () => (await fixture.Server(stranger).GetStatusAsync()).Epoch >= map.Epoch);

        await Assert.ThrowsAsync<MisdirectedRequestException>(() =>
            fixture.Server(stranger).WriteAsync(new SegmentWrite(map.Epoch, new SegmentAddress(volume.VolumeId, 0), 0, new byte[4096], false)));
        await Assert.ThrowsAsync<MisdirectedRequestException>(() =>
            fixture.Server(stranger).ReadAsync(new SegmentRead(map.Epoch, new SegmentAddress(volume.VolumeId, 0), 0, 4096)));
    }

    [SkippableFact]
    public async Task Server_whose_push_was_dropped_is_caught_up_by_the_next_request_and_client_io_succeeds()
    {
        fixture.SkipIfUnavailable();
        var name = "dropped-" + Guid.NewGuid().ToString("N")[..12];
        var map = await fixture.Client.GetMapAsync();
        var lagging = map.Hosts[0].HostId;
        var reportsBefore = await MismatchReportsAsync(lagging);
        var epochBefore = (await fixture.Server(lagging).GetStatusAsync()).Epoch;

        fixture.PushFilter.DropPushesTo(lagging);
        try
        {
            // Creating a volume moves the epoch; the lagging host does not hear of it.
            var volume = await fixture.Client.CreateVolumeAsync(name, 32L * Segment, 1);
            var created = (await fixture.Client.GetMapAsync()).Epoch;
            await Task.Delay(300); // time for the (dropped) push to have arrived
            Assert.Equal(epochBefore, (await fixture.Server(lagging).GetStatusAsync()).Epoch);

            // Every segment whose primary is the lagging host gets a request at the newer epoch.
            var handle = await fixture.Client.OpenVolumeAsync(name);
            var data = Replicas.RandomBytes(32 * Segment, seed: 99);
            await handle.WriteAsync(0, data);
            var back = new byte[data.Length];
            await handle.ReadAsync(0, back);
            Assert.True(data.AsSpan().SequenceEqual(back));
            Assert.Contains(volume.PlacementGroups, pg => pg.Primary == lagging);

            Assert.True(fixture.PushFilter.DroppedFor(lagging) > 0, "the push should have been dropped");
            // At least the volume's epoch: the shared cluster's own changes may have moved both on since.
            var caughtUp = (await fixture.Server(lagging).GetStatusAsync()).Epoch;
            Assert.True(caughtUp >= created, $"the lagging host is at epoch {caughtUp}, short of {created}, where the volume it served was made");
            await WaitUntilAsync(async () => await MismatchReportsAsync(lagging) > reportsBefore);
        }
        finally
        {
            fixture.PushFilter.DeliverAll();
        }
    }

    [SkippableFact]
    public async Task Client_holding_an_old_map_is_rejected_refreshes_and_its_io_succeeds()
    {
        fixture.SkipIfUnavailable();
        var name = "oldmap-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 8L * Segment, 2);

        // A second client that does not follow pushes: it keeps the map it pulled at start.
        await using var oldClient = await OstorClient.AttachAsync(fixture.Cluster.Client, new OstorClientOptions { SubscribeToMapChanges = false });
        var handle = await oldClient.OpenVolumeAsync(name);
        var oldEpoch = oldClient.Maps.Current.Epoch;

        await fixture.Client.CreateVolumeAsync(name + "-b", 4096, 1); // epoch moves on
        var current = fixture.Client.Maps.Current.Epoch;
        Assert.True(current > oldEpoch);
        var primary = handle.Info.PlacementGroupOf(0).Primary;
        // At least the new map: the cluster may move on meanwhile (recovery or balancing after an earlier test).
        await WaitUntilAsync(async () => (await fixture.Server(primary).GetStatusAsync()).Epoch >= current);
        var reportsBefore = await MismatchReportsAsync(primary);

        var data = Replicas.RandomBytes(Segment, seed: 123);
        await handle.WriteAsync(0, data);

        Assert.True(oldClient.Maps.Current.Epoch >= current, $"the old client still holds epoch {oldClient.Maps.Current.Epoch}, before {current}");
        await WaitUntilAsync(async () => await MismatchReportsAsync(primary) > reportsBefore);
        var back = new byte[Segment];
        await (await fixture.Client.OpenVolumeAsync(name)).ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back));
    }

    [SkippableFact]
    public async Task Every_change_of_allocation_raises_the_epoch_by_exactly_one()
    {
        fixture.SkipIfUnavailable();
        var name = "epochs-" + Guid.NewGuid().ToString("N")[..12];
        var e0 = (await fixture.Client.GetMapAsync()).Epoch;
        await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 2);
        Assert.Equal(e0 + 1, (await fixture.Management.GetMapAsync()).Epoch);
        await fixture.Client.ResizeVolumeAsync(name, 8L * Segment);
        Assert.Equal(e0 + 2, (await fixture.Management.GetMapAsync()).Epoch);
        await fixture.Client.ResizeVolumeAsync(name, 8L * Segment); // same size: no change
        Assert.Equal(e0 + 2, (await fixture.Management.GetMapAsync()).Epoch);
        await fixture.Client.DeleteVolumeAsync(name);
        // Two changes: the volume becomes a tombstone, then the Up hosts' confirmed purges come off it
        // (and it is pruned when no host is left to confirm).
        var afterDelete = await fixture.Management.GetMapAsync();
        Assert.Equal(e0 + 4, afterDelete.Epoch);
        Assert.Null(afterDelete.FindVolume(name));
        var upHosts = afterDelete.Hosts.Where(h => h.State == HostState.Up).Select(h => h.HostId);
        Assert.All(afterDelete.Tombstones, t => Assert.Empty(t.PendingHosts.Intersect(upHosts)));
    }

    [SkippableFact]
    public async Task Storage_server_of_a_host_with_no_live_silo_is_never_activated_elsewhere()
    {
        fixture.SkipIfUnavailable();
        var error = await Assert.ThrowsAsync<HostUnavailableException>(() => fixture.Server("host-nowhere").GetStatusAsync());
        Assert.Contains("host-nowhere", error.Message, StringComparison.Ordinal);
    }

    private async Task<long> MismatchReportsAsync(string hostId) =>
        (await fixture.Management.GetHostsAsync()).Single(h => h.Host.HostId == hostId).MismatchReports;

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within 15 s");
            await Task.Delay(50);
        }
    }
}
