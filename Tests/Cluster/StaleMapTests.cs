using Microsoft.Extensions.DependencyInjection;
using Orleans.Metadata;
using Orleans.Runtime;
using OrleansStorage.Client.Library;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A client that a host refused as stale catches up with that host's epoch even when the
/// management service it reaches answers with an older map (issue 28, hole 7; docs/epoch-protocol.md,
/// "A client on an old map").
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class StaleMapTests(StorageClusterFixture fixture, ITestOutputHelper output)
{
    private readonly Eventually _eventually = new(output);

    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public void Clients_call_the_management_and_auth_services_through_each_gateway_in_turn()
    {
        fixture.SkipIfUnavailable();
        // What the client's routing reads: an unordered grain type's calls take the next gateway each time.
        var manifest = fixture.Cluster.Client.ServiceProvider.GetRequiredService<IClusterManifestProvider>().Current;
        foreach (var type in new[] { "ostor-management", "ostor-auth" })
        {
            var properties = manifest.AllGrainManifests.SelectMany(m => m.Grains).First(g => g.Key.ToString() == type).Value.Properties;
            Assert.True(properties.TryGetValue(WellKnownGrainTypeProperties.Unordered, out var unordered) && unordered == "true",
                $"grain type '{type}' is not unordered: a client sticks to the gateway its first call took");
        }
    }

    [SkippableFact]
    public async Task Client_whose_management_answers_an_old_map_takes_the_map_from_the_host_that_refused_it()
    {
        fixture.SkipIfUnavailable();
        var name = "heldmap-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 1);
        var held = await fixture.Client.GetMapAsync();
        var (cluster, seam) = HeldMapClusterClient.Create(fixture.Cluster.Client, held);
        // Not following pushes, as a short-lived CLI call: the map comes from management's answers only.
        await using var client = await OstorClient.AttachAsync(cluster, new OstorClientOptions { SubscribeToMapChanges = false, RetryTimeout = TimeSpan.FromSeconds(5) });
        var handle = await client.OpenVolumeAsync(name);
        Assert.Equal(held.Epoch, client.Maps.Current.Epoch);

        await fixture.Client.CreateVolumeAsync(name + "-b", 4096, 1); // the epoch moves on
        var current = fixture.Client.Maps.Current.Epoch;
        var primary = handle.Info.PlacementGroupOf(0).Primary;
        await _eventually.UntilAsync(async () => (await fixture.Server(primary).GetStatusAsync()).Epoch >= current, $"host '{primary}' at epoch {current}", TimeSpan.FromSeconds(15));

        var data = Replicas.RandomBytes(Segment, seed: 287);
        await handle.WriteAsync(0, data);

        Assert.True(seam.HeldAnswers >= 2, $"management answered the held map {seam.HeldAnswers} times; the write should have asked it again");
        Assert.True(client.Maps.Current.Epoch >= current, $"the client holds epoch {client.Maps.Current.Epoch}, before {current}");
        var back = new byte[Segment];
        await (await fixture.Client.OpenVolumeAsync(name)).ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back), "the write did not land");
    }
}
