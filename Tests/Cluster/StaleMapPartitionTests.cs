using System.Globalization;
using OrleansStorage.Client.Library;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Issue 28, hole 7, as it was found by hand on <c>infra/cluster up --netns</c>: the host running
/// the management service is cut off from the other hosts and the database, clients still reach
/// it; the others declare it Down, start management anew and move the epoch on.
/// </summary>
public sealed class StaleMapPartitionTests(ITestOutputHelper output)
{
    private const int Hosts = 3;
    private readonly Eventually _eventually = new(output);

    [SkippableFact]
    public async Task Clients_that_still_reach_the_cut_off_management_host_write_through_the_others()
    {
        Prerequisites.Require(ScriptedCluster.NetnsUnavailable() is null, ScriptedCluster.NetnsUnavailable() ?? "");
        await using var cluster = new ScriptedCluster(output.WriteLine, Hosts, netns: true);
        cluster.SetEnvironment("OSTOR_HTTP_PORT_BASE", "0"); // no dashboards: nothing here reads them
        await cluster.UpAsync();

        VolumeInfo volume;
        string management;
        await using (var admin = await OstorClient.ConnectAsync(Options(cluster, cluster.Gateways)))
        {
            volume = await admin.CreateVolumeAsync("stuck", 64L << 20, 1);
            var status = await admin.GetStatusAsync();
            management = status.Hosts.Single(h => h.Server?.SiloAddress == status.Management.Silo).Host.HostId;
        }
        var cutOff = int.Parse(management["host-".Length..], CultureInfo.InvariantCulture);
        // A block led by another host: it is that host that refuses the stuck client's old epoch.
        var segment = Enumerable.Range(0, (int)volume.SegmentCount).First(s => volume.PlacementGroupOf(s).Primary != management);
        var primary = volume.PlacementGroupOf(segment).Primary;
        output.WriteLine($"management on {management}; segment {segment} led by {primary}");

        // Connected before the cut, holding its ticket and its map, not following pushes; the
        // management host's gateway first, as the client of the issue had it. Not through that
        // gateway alone: a writer that can reach no live management service cannot be paused for
        // a snapshot, and holds its writes once its registration goes unrenewed (docs/snapshots.md).
        var stuckOptions = Options(cluster, [cluster.GatewayOf(cutOff), .. Enumerable.Range(1, Hosts).Where(h => h != cutOff).Select(cluster.GatewayOf)]);
        stuckOptions.SubscribeToMapChanges = false;
        stuckOptions.RetryTimeout = TimeSpan.FromSeconds(60);
        await using var stuck = await OstorClient.ConnectAsync(stuckOptions);
        var stuckVolume = await stuck.OpenVolumeAsync("stuck");
        var epochBefore = stuck.Maps.Current.Epoch;

        // Watches the majority's side; pulls its maps (a subscription's rendezvous may live on the cut-off host).
        var majorityOptions = Options(cluster, Enumerable.Range(1, Hosts).Where(h => h != cutOff).Select(cluster.GatewayOf));
        majorityOptions.SubscribeToMapChanges = false;
        await using var majority = await OstorClient.ConnectAsync(majorityOptions);

        await cluster.PartitionAsync(cutOff); // from the other hosts and the database; clients still reach it
        var moved = await _eventually.MapAsync(majority.GetMapAsync, m => m.Epoch > epochBefore && m.FindHost(management)!.State != HostState.Up,
            $"{management} Down in a new map", TimeSpan.FromSeconds(90));
        await _eventually.UntilAsync(async () => (await majority.Cluster.GetGrain<IStorageServerGrain>(primary).GetStatusAsync()).Epoch >= moved.Epoch,
            $"{primary} at epoch {moved.Epoch}", TimeSpan.FromSeconds(30));
        output.WriteLine($"epoch {epochBefore} -> {moved.Epoch}");

        var offset = segment * volume.SegmentSizeBytes;
        var data = Replicas.RandomBytes(1 << 20, seed: 2807);
        await stuckVolume.WriteAsync(offset, data);
        await stuckVolume.FlushAsync();
        Assert.True(stuck.Maps.Current.Epoch >= moved.Epoch, $"the stuck client holds epoch {stuck.Maps.Current.Epoch}, before {moved.Epoch}");
        await AssertReadsAsync(majority, offset, data);

        // A fresh client given every gateway, as 'ostor put' is: its map and ticket requests that
        // go through the cut-off host are refused or time out, and are tried through the others.
        var freshOptions = Options(cluster, cluster.Gateways);
        freshOptions.SubscribeToMapChanges = false;
        for (var attempt = 0; attempt < 3; attempt++)
        {
            await using var fresh = await OstorClient.ConnectAsync(freshOptions);
            var freshVolume = await fresh.OpenVolumeAsync("stuck");
            var more = Replicas.RandomBytes(1 << 20, seed: 2808 + attempt);
            await freshVolume.WriteAsync(offset, more);
            await freshVolume.FlushAsync();
            await AssertReadsAsync(majority, offset, more);
        }
    }

    private static async Task AssertReadsAsync(OstorClient client, long offset, byte[] expected)
    {
        var back = new byte[expected.Length];
        await (await client.OpenVolumeAsync("stuck")).ReadAsync(offset, back);
        Assert.True(expected.AsSpan().SequenceEqual(back), "the write did not land");
    }

    private static OstorClientOptions Options(ScriptedCluster cluster, IEnumerable<string> gateways)
    {
        var options = new OstorClientOptions { ConnectTimeout = TimeSpan.FromSeconds(60), PkiDirectory = cluster.Pki };
        options.Gateways.Clear();
        foreach (var gateway in gateways)
        {
            options.Gateways.Add(gateway);
        }
        return options;
    }
}
