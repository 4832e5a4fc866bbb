using System.Globalization;
using OrleansStorage.Client.Library;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Real network partitions (Jepsen-style) on <c>infra/cluster up --netns</c>: every host in its
/// own network namespace, cut off with <c>infra/partition</c>. Reads and writes of one block are
/// checked for linearizability across the partition (docs/failures.md, "Read leases").
/// </summary>
public sealed class PartitionTests(ITestOutputHelper output)
{
    private const int Hosts = 3;
    private readonly Eventually _eventually = new(output);

    [SkippableFact]
    public async Task A_primary_cut_off_from_management_and_its_peers_but_not_from_a_reader_never_serves_it_old_data()
    {
        Prerequisites.Require(ScriptedCluster.NetnsUnavailable() is null, ScriptedCluster.NetnsUnavailable() ?? "");
        await using var cluster = new ScriptedCluster(output.WriteLine, Hosts, netns: true);
        await cluster.UpAsync();

        VolumeInfo volume;
        string management;
        await using (var admin = await OstorClient.ConnectAsync(Options(cluster, cluster.Gateways)))
        {
            volume = await admin.CreateVolumeAsync("partitioned", 64L << 20, 2);
            var status = await admin.GetStatusAsync();
            management = status.Hosts.Single(h => h.Server?.SiloAddress == status.Management.Silo).Host.HostId;
        }
        // A block whose primary does not run the management service: that host is cut off below.
        var segment = Enumerable.Range(0, (int)volume.SegmentCount).First(s => volume.PlacementGroupOf(s).Primary != management);
        var victimId = volume.PlacementGroupOf(segment).Primary;
        var victim = int.Parse(victimId["host-".Length..], CultureInfo.InvariantCulture);
        output.WriteLine($"management on {management}; block in segment {segment}, led by {victimId}");

        // The writer is a client on the majority's side: through a gateway on the cut-off host its
        // requests would stall with it (a client that reaches the cluster only there is the reader).
        await using var writerClient = await OstorClient.ConnectAsync(Options(cluster, Enumerable.Range(1, Hosts).Where(h => h != victim).Select(cluster.GatewayOf)));
        var history = new RegisterHistory(segment * (long)volume.SegmentSizeBytes);
        var writer = await writerClient.OpenVolumeAsync("partitioned");
        Assert.True(await history.WriteNextAsync(writer));

        // The reader reaches the cluster only through the victim's gateway, and gives up on a read
        // quickly: it sees the victim's side of the partition, read by read.
        var readerOptions = Options(cluster, [cluster.GatewayOf(victim)]);
        readerOptions.SubscribeToMapChanges = false;
        readerOptions.RetryTimeout = TimeSpan.FromSeconds(2);
        await using var readerClient = await OstorClient.ConnectAsync(readerOptions);
        var reader = await readerClient.OpenVolumeAsync("partitioned");

        using var stop = new CancellationTokenSource();
        var running = history.RunAsync(writer, reader, stop.Token);

        await Task.Delay(TimeSpan.FromSeconds(3));
        var before = (history.Writes, history.Reads);
        await cluster.PartitionAsync(victim); // from every other host and the database
        await _eventually.MapAsync(writerClient.GetMapAsync, m => m.FindVolume("partitioned")!.PlacementGroupOf(segment).Primary != victimId,
            $"a new primary for the block's group while {victimId} is cut off", TimeSpan.FromSeconds(60));
        var writesAtChange = history.Writes;
        // Writes go on through the new primary; the reader stays cut off with the victim. When the
        // partition also moved management (its directory entry was on the victim's silo), the new
        // primary first waits until a majority of hosts witness the new activation, then a witness
        // window and a lease: about 18 s (docs/failures.md, "Leases without the database").
        await Task.Delay(TimeSpan.FromSeconds(30));
        var during = (Writes: history.Writes - before.Writes, Reads: history.Reads - before.Reads, Failed: history.FailedReads);
        Assert.True(history.Writes > writesAtChange + 10, $"writes did not continue through the new primary ({writesAtChange} -> {history.Writes})");

        await cluster.HealAsync();
        await Task.Delay(TimeSpan.FromSeconds(3));
        await stop.CancelAsync();
        await running;

        output.WriteLine($"before the partition: {before.Writes} writes, {before.Reads} reads; during and after: {during.Writes} writes, {during.Reads} successful reads, {during.Failed} failed reads");
        output.WriteLine($"longest write {history.LongestWrite.TotalSeconds:0.0} s (failure detection, then the cut-off primary's lease if it had not run out yet)");
        foreach (var error in history.ReadErrors().Take(5))
        {
            output.WriteLine("read error: " + error);
        }
        var violations = history.Violations();
        Assert.True(violations.Count == 0, $"{violations.Count} stale reads, e.g. {string.Join("; ", violations.Take(3))}");

        // Healed: Orleans declared the victim's silo dead, so it stopped; started again, it is
        // resynced and every replica holds the same bytes.
        await _eventually.UntilAsync(() => Task.FromResult(!cluster.IsRunning(victim)), $"{victimId}'s silo stopped after being declared dead", TimeSpan.FromSeconds(60));
        await cluster.UpAsync();
        await _eventually.MapAsync(writerClient.GetMapAsync, m => m.FindHost(victimId)!.State == HostState.Up && Eventually.GroupsFull(m),
            $"{victimId} back and resynced", TimeSpan.FromSeconds(120));
        Assert.Empty(await writer.VerifyReplicasAsync());
        await history.ReadAsync(writer);
        Assert.Empty(history.Violations());
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
