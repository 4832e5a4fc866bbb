using System.Reflection;
using Orleans.CodeGeneration;
using Orleans.Runtime;
using OrleansStorage.Auth;
using OrleansStorage.Management;
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

    [Fact]
    public void Clients_ask_for_the_map_and_for_tickets_through_each_gateway_in_turn()
    {
        // What Orleans' client routing reads: an unordered request goes to the next live gateway.
        foreach (var (grain, method) in new[] { (typeof(IManagementServiceGrain), "GetMap"), (typeof(IManagementServiceGrain), "GetStatus"), (typeof(IManagementServiceGrain), "GetHosts"), (typeof(IAuthServiceGrain), "IssueTicket") })
        {
            var options = GeneratedRequestOptions(grain, method);
            Assert.True(options.HasFlag(InvokeMethodOptions.Unordered),
                $"{grain.Name}.{method} is sent as {options}: a client sticks to the gateway the grain's first call took");
        }
    }

    /// <summary>The options of the request Orleans' code generator made for a grain method (named by its alias).</summary>
    private static InvokeMethodOptions GeneratedRequestOptions(Type grain, string alias)
    {
        var requestType = grain.Assembly.GetTypes().Single(t => typeof(IRequest).IsAssignableFrom(t) && !t.IsAbstract && t.GetCustomAttributesData()
            .Any(a => a.AttributeType.Name == "CompoundTypeAliasAttribute" && a.ConstructorArguments.Count == 1
                      && a.ConstructorArguments[0].Value is IReadOnlyCollection<CustomAttributeTypedArgument> parts
                      && parts.Any(p => Equals(p.Value, grain)) && parts.Any(p => Equals(p.Value, alias))));
        return ((IRequest)Activator.CreateInstance(requestType)!).Options;
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
