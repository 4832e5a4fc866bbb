using OrleansStorage.Client.Library;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>A cluster of its own: these tests kill every silo.</summary>
public sealed class RestartClusterFixture : StorageClusterFixture;

[CollectionDefinition(Name)]
public sealed class RestartClusterCollection : ICollectionFixture<RestartClusterFixture>
{
    public const string Name = "restart cluster";
}

[Collection(RestartClusterCollection.Name)]
public sealed class ClusterRestartTests(RestartClusterFixture fixture)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task Full_cluster_restart_keeps_map_epoch_and_data()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("kept-1", 24L * Segment, 2);
        await fixture.Client.CreateVolumeAsync("kept-3", 24L * Segment, 3);
        var one = await fixture.Client.OpenVolumeAsync("kept-1");
        var three = await fixture.Client.OpenVolumeAsync("kept-3");
        var data1 = Replicas.RandomBytes(20 * Segment, seed: 1);
        var data3 = Replicas.RandomBytes(20 * Segment, seed: 3);
        await one.WriteAsync(Segment / 3, data1);
        await three.WriteAsync(2 * Segment + 7, data3);
        // A snapshot taken before an overwrite, and a clone of it written to: all must survive too.
        await fixture.Client.CreateSnapshotAsync("kept-3", "before");
        await three.WriteAsync(2 * Segment + 7, Replicas.RandomBytes(3 * Segment, seed: 4));
        await fixture.Client.CloneVolumeAsync("kept-3@before", "kept-clone", 2);
        var clonePatch = Replicas.RandomBytes(Segment / 2, seed: 5);
        await (await fixture.Client.OpenVolumeAsync("kept-clone")).WriteAsync(5 * Segment, clonePatch);
        var snapshotImage = new byte[24 * Segment];
        data3.CopyTo(snapshotImage, 2 * Segment + 7);
        var cloneImage = (byte[])snapshotImage.Clone();
        clonePatch.CopyTo(cloneImage, 5 * Segment);
        var current3 = (byte[])snapshotImage.Clone();
        Replicas.RandomBytes(3 * Segment, seed: 4).CopyTo(current3, 2 * Segment + 7);
        var mapBefore = await fixture.Management.GetMapAsync();

        // Kill every silo (no graceful shutdown), then start three new ones, which take the
        // same HostIds and therefore the same data directories.
        foreach (var silo in fixture.Cluster.Silos.ToList())
        {
            await fixture.KillSiloAsync(silo);
            fixture.ReleaseHostId(silo.Name);
        }
        for (var i = 0; i < 3; i++)
        {
            await fixture.Cluster.StartAdditionalSiloAsync();
        }
        await fixture.Cluster.InitializeClientAsync();
        await fixture.WaitForHostsAsync(3);

        var mapAfter = await SettledMapAsync();
        // The epoch continues from the stored map, never from 1. It moves at least once per host
        // whose gateway or data endpoint changed (TestingHost gives new silos new ports; infra/cluster
        // restarts hosts on the same ports, and there it does not move). It may move more: the
        // silos die one by one, so the last management service standing can mark the first dead
        // hosts Down, and those resync when they return.
        var movedHosts = mapAfter.Hosts.Count(h => mapBefore.FindHost(h.HostId) is { } before && (before.Endpoint != h.Endpoint || before.DataEndpoint != h.DataEndpoint));
        Assert.True(mapAfter.Epoch >= mapBefore.Epoch + movedHosts, $"epoch {mapBefore.Epoch} before the restart, {mapAfter.Epoch} after, with {movedHosts} hosts moved");
        Assert.Equal(mapBefore.Hosts.Select(h => h.HostId).Order(), mapAfter.Hosts.Select(h => h.HostId).Order());
        Assert.All(mapAfter.Hosts, h => Assert.Equal(HostState.Up, h.State));
        // Every group keeps its replicas (the primary may have moved among them).
        Assert.Equal(
            mapBefore.Volumes.Select(v => (v.VolumeId, v.Name, v.SizeBytes, Placement(v), string.Join(",", v.Snapshots), v.Parent)),
            mapAfter.Volumes.Select(v => (v.VolumeId, v.Name, v.SizeBytes, Placement(v), string.Join(",", v.Snapshots), v.Parent)));

        await using var client = await OstorClient.AttachAsync(fixture.Cluster.Client);
        var back1 = new byte[data1.Length];
        await (await client.OpenVolumeAsync("kept-1")).ReadAsync(Segment / 3, back1);
        Assert.True(data1.AsSpan().SequenceEqual(back1), "kept-1 lost data across the restart");
        foreach (var (name, image) in new[] { ("kept-3", current3), ("kept-3@before", snapshotImage), ("kept-clone", cloneImage) })
        {
            var back = new byte[image.Length];
            await (await client.OpenVolumeAsync(name)).ReadAsync(0, back);
            Assert.True(image.AsSpan().SequenceEqual(back), $"{name} lost data across the restart");
        }
        await Replicas.AssertAllHoldAsync(fixture, mapAfter.FindVolume("kept-3")!, 0, current3);
        await Replicas.AssertSnapshotCopiesIdenticalAsync(fixture, mapAfter.FindVolume("kept-3")!);
    }

    private static string Placement(VolumeInfo volume) =>
        string.Join(";", volume.PlacementGroups.Select(pg => string.Join(",", pg.Replicas.Order(StringComparer.Ordinal))));

    /// <summary>The map once no replica is pending and it has not moved for a second (bounded: 60 s).</summary>
    private async Task<ClusterMap> SettledMapAsync()
    {
        var map = await fixture.Management.GetMapAsync();
        for (var attempt = 0; attempt < 60; attempt++)
        {
            await Task.Delay(1000);
            var next = await fixture.Management.GetMapAsync();
            if (next.Epoch == map.Epoch && next.Volumes.All(v => v.PlacementGroups.All(pg => pg.Pending.IsEmpty)))
            {
                return next;
            }
            map = next;
        }
        return map;
    }
}
