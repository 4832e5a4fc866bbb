using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Streams;
using OrleansStorage.Errors;
using OrleansStorage.Identity;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A host's disk belongs to one cluster (docs/epoch-protocol.md, "Identity"): silos built by the
/// real silo configuration refuse a database, a data directory or a deployment that is not theirs
/// and change nothing; a lost database is rebuilt from the disks; deletion goes by tombstones.
/// </summary>
public sealed class ClusterIdentityTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int MiB = 1 << 20;
    private readonly Eventually _eventually = new(output);
    private readonly List<ConfiguredSilos> _clusters = [];
    private PrivatePostgres _postgres = null!;

    public async Task InitializeAsync() =>
        _postgres = await PrivatePostgres.GetAsync() ?? throw new InvalidOperationException("PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);

    public async Task DisposeAsync()
    {
        foreach (var cluster in _clusters)
        {
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_cluster_restarted_on_an_empty_database_refuses_untouched_and_recover_map_brings_every_volume_back()
    {
        var silos = await NewClusterAsync(3);
        var expected = new Dictionary<string, byte[]>();
        long epochBefore;
        await using (var client = await silos.ConnectAsync())
        {
            foreach (var factor in new[] { 1, 2, 3 })
            {
                expected[$"f{factor}"] = await CreateAndFillAsync(client, $"f{factor}", 8 * MiB, factor, seed: factor);
            }
            await client.ResizeVolumeAsync("f2", 16L * MiB);
            var grown = Replicas.RandomBytes(8 * MiB, seed: 22);
            await (await client.OpenVolumeAsync("f2")).WriteAsync(8L * MiB, grown);
            expected["f2"] = [.. expected["f2"], .. grown];
            await CreateAndFillAsync(client, "gone", 4 * MiB, 2, seed: 9);
            await client.DeleteVolumeAsync("gone");
            epochBefore = (await client.GetMapAsync()).Epoch;
        }
        await silos.StopAllAsync();
        var before = silos.Checksums();
        var clusterId = Superblock.Parse("", File.ReadAllBytes(Path.Combine(silos.DataDirectoryOf("host-1"), Superblock.FileName))).ClusterId;

        silos.ConnectionString = await _postgres.CreateDatabaseAsync("ostor_lost");
        foreach (var hostId in new[] { "host-1", "host-2", "host-3" })
        {
            var refusal = await Assert.ThrowsAsync<HostStartupException>(() => silos.StartAsync(hostId));
            output.WriteLine(refusal.Message);
            Assert.Contains("the database holds no cluster map", refusal.Message, StringComparison.Ordinal);
            Assert.Contains(clusterId.ToString(), refusal.Message, StringComparison.Ordinal);
            Assert.Contains("recover-map", refusal.Message, StringComparison.Ordinal);
        }
        Assert.Equal(before, silos.Checksums());

        foreach (var hostId in new[] { "host-1", "host-2", "host-3" })
        {
            await silos.StartAsync(hostId, new Dictionary<string, string?> { ["Storage:RecoverMap"] = "true" });
        }
        await using var recovered = await silos.ConnectAsync();
        MapRecoveryReport? report = null;
        await _eventually.UntilAsync(async () =>
        {
            try
            {
                report = await recovered.RecoverMapAsync(expectedHosts: 3);
                return true;
            }
            catch (ManagementUnavailableException ex)
            {
                output.WriteLine(ex.Message);
                return false;
            }
        }, "the map is recovered from three hosts");
        foreach (var line in report!.Lines)
        {
            output.WriteLine(line);
        }
        Assert.Equal(clusterId, report.Map.ClusterId);
        // Above every epoch a client held, even one no host adopted before the stop.
        Assert.True(report.Map.Epoch > epochBefore, $"recovered epoch {report.Map.Epoch} must be above {epochBefore}, the last one the client saw");
        foreach (var (name, data) in expected)
        {
            var handle = await recovered.OpenVolumeAsync(name);
            Assert.Equal(data.Length, handle.Info.SizeBytes);
            var back = new byte[data.Length];
            await handle.ReadAsync(0, back);
            Assert.True(data.AsSpan().SequenceEqual(back), $"volume '{name}' reads back byte-identical after recovery");
        }
        await Assert.ThrowsAsync<VolumeNotFoundException>(() => recovered.OpenVolumeAsync("gone"));
        // Once recovered, the database holds the map: a second recovery is refused.
        await Assert.ThrowsAsync<InvalidRequestException>(() => recovered.RecoverMapAsync());
    }

    [Fact]
    public async Task A_data_directory_of_another_host_or_cluster_or_in_use_is_refused_and_untouched()
    {
        var a = await NewClusterAsync(2);
        await using (var client = await a.ConnectAsync())
        {
            await CreateAndFillAsync(client, "data", 4 * MiB, 2, seed: 3);
        }
        await a.StopAllAsync();
        var before = a.Checksums();

        var asOtherHost = await Assert.ThrowsAsync<HostStartupException>(() =>
            a.StartAsync("host-9", new Dictionary<string, string?> { ["Storage:DataDirectory"] = a.DataDirectoryOf("host-1") }));
        output.WriteLine(asOtherHost.Message);
        Assert.Contains("belongs to host 'host-1'", asOtherHost.Message, StringComparison.Ordinal);

        var b = await NewClusterAsync(1);
        var clusterA = Superblock.Parse("", File.ReadAllBytes(Path.Combine(a.DataDirectoryOf("host-1"), Superblock.FileName))).ClusterId;
        var clusterB = Superblock.Parse("", File.ReadAllBytes(Path.Combine(b.DataDirectoryOf("host-1"), Superblock.FileName))).ClusterId;
        var ofOtherCluster = await Assert.ThrowsAsync<HostStartupException>(() =>
            b.StartAsync("host-1", new Dictionary<string, string?>
            {
                ["Storage:DataDirectory"] = a.DataDirectoryOf("host-1"),
                // b's own host-1 runs on its ports: ports of its own, so the disk is what is refused.
                ["Cluster:SiloPort"] = Ports.Free().ToString(CultureInfo.InvariantCulture),
                ["Cluster:GatewayPort"] = Ports.Free().ToString(CultureInfo.InvariantCulture),
            }));
        output.WriteLine(ofOtherCluster.Message);
        Assert.Contains(clusterA.ToString(), ofOtherCluster.Message, StringComparison.Ordinal);
        Assert.Contains(clusterB.ToString(), ofOtherCluster.Message, StringComparison.Ordinal);
        Assert.Equal(before, a.Checksums());

        await a.StartAsync("host-1");
        var twice = new ConfiguredSilos(a.ConnectionString, a.ClusterId);
        _clusters.Add(twice);
        var inUse = await Assert.ThrowsAsync<HostStartupException>(() =>
            twice.StartAsync("host-1", new Dictionary<string, string?> { ["Storage:DataDirectory"] = a.DataDirectoryOf("host-1") }));
        output.WriteLine(inUse.Message);
        Assert.Contains("in use by another running ostor-silo", inUse.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_silo_of_another_orleans_cluster_id_on_the_live_database_is_refused_and_changes_nothing()
    {
        var live = await NewClusterAsync(2);
        await using var client = await live.ConnectAsync();
        await CreateAndFillAsync(client, "live", 4 * MiB, 2, seed: 4);
        var map = await client.GetMapAsync();
        var before = live.Checksums();

        var intruder = new ConfiguredSilos(live.ConnectionString, "intruder-" + Guid.NewGuid().ToString("N")[..6]);
        _clusters.Add(intruder);
        var refusal = await Assert.ThrowsAsync<HostStartupException>(() => intruder.StartAsync("host-3"));
        output.WriteLine(refusal.Message);
        Assert.Contains("two deployments never share one database", refusal.Message, StringComparison.Ordinal);
        await Task.Delay(TimeSpan.FromSeconds(3)); // what the intruder changed, if anything, would show by now

        var after = await client.GetMapAsync();
        Assert.Equal(map.Epoch, after.Epoch);
        Assert.All(after.Hosts, h => Assert.Equal(HostState.Up, h.State));
        Assert.Equal(before, live.Checksums());
    }

    [Fact]
    public async Task Maps_of_another_cluster_or_arbitrary_maps_on_the_stream_are_never_adopted_and_delete_nothing()
    {
        var silos = await NewClusterAsync(2);
        await using var client = await silos.ConnectAsync();
        var data = await CreateAndFillAsync(client, "kept", 4 * MiB, 2, seed: 5);
        var map = await client.GetMapAsync();
        var before = silos.Checksums();

        var stream = client.Cluster.GetStreamProvider(ClusterMapStream.ProviderName)
            .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
        await stream.OnNextAsync(map with { Epoch = map.Epoch + 100, ClusterId = Guid.NewGuid(), Volumes = [] });
        await stream.OnNextAsync(map with { Epoch = map.Epoch + 1_000_000, Volumes = [] });
        foreach (var host in map.Hosts)
        {
            await client.Cluster.GetGrain<Storage.IStorageServerGrain>(host.HostId).RefreshMapAsync(long.MaxValue - 1);
        }
        await Task.Delay(TimeSpan.FromSeconds(2));

        foreach (var host in map.Hosts)
        {
            Assert.Equal(map.Epoch, (await client.Cluster.GetGrain<Storage.IStorageServerGrain>(host.HostId).GetStatusAsync()).Epoch);
        }
        Assert.Equal(before, silos.Checksums());
        var back = new byte[data.Length];
        await (await client.OpenVolumeAsync("kept")).ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back));
    }

    [Fact]
    public async Task A_volume_deleted_while_a_host_is_down_is_removed_there_when_it_returns_and_no_other()
    {
        var silos = await NewClusterAsync(3);
        await using var client = await silos.ConnectAsync();
        await CreateAndFillAsync(client, "doomed", 4 * MiB, 3, seed: 6);
        var kept = await CreateAndFillAsync(client, "kept", 4 * MiB, 3, seed: 7);
        var doomed = (await client.GetMapAsync()).FindVolume("doomed")!.VolumeId;
        var downDirectory = Path.Combine(silos.DataDirectoryOf("host-3"), HostDisk.VolumesFolderName, doomed.ToString("N"));
        Assert.True(Directory.Exists(downDirectory));

        await silos.StopAsync("host-3");
        await _eventually.MapAsync(client.GetMapAsync, m => m.FindHost("host-3")!.State == HostState.Down, "host-3 is Down");
        await client.DeleteVolumeAsync("doomed");
        var map = await client.GetMapAsync();
        Assert.Equal(["host-3"], map.FindTombstone(doomed)!.PendingHosts.ToArray());
        Assert.True(Directory.Exists(downDirectory), "a Down host's files stay until it learns of the delete");

        await silos.StartAsync("host-3");
        await _eventually.MapAsync(client.GetMapAsync, m => m.FindTombstone(doomed) is null, "the tombstone is pruned once host-3 confirmed the purge");
        Assert.False(Directory.Exists(downDirectory));
        await _eventually.MapAsync(client.GetMapAsync, Eventually.GroupsFull, "host-3 is back in every group");
        foreach (var hostId in new[] { "host-1", "host-2", "host-3" })
        {
            var segment = await client.Cluster.GetGrain<Storage.IStorageServerGrain>(hostId)
                .ReadLocalAsync(new Storage.SegmentAddress(map.FindVolume("kept")!.VolumeId, 0), 0, MiB);
            Assert.True(kept.AsSpan(0, MiB).SequenceEqual(segment.Bytes.Span), $"{hostId} still holds volume 'kept'");
        }
    }

    private async Task<ConfiguredSilos> NewClusterAsync(int hosts)
    {
        var silos = new ConfiguredSilos(await _postgres.CreateDatabaseAsync("ostor_ident"), "ident-" + Guid.NewGuid().ToString("N")[..8]);
        _clusters.Add(silos);
        for (var i = 1; i <= hosts; i++)
        {
            await silos.StartAsync($"host-{i}");
        }
        await using var client = await silos.ConnectAsync();
        await _eventually.MapAsync(client.GetMapAsync, m => m.Hosts.Count(h => h.State == HostState.Up) == hosts, $"{hosts} hosts registered");
        return silos;
    }

    private static async Task<byte[]> CreateAndFillAsync(Client.Library.OstorClient client, string name, int size, int factor, int seed)
    {
        await client.CreateVolumeAsync(name, size, factor);
        var data = Replicas.RandomBytes(size, seed);
        await (await client.OpenVolumeAsync(name)).WriteAsync(0, data);
        return data;
    }
}
