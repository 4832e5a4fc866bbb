using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;
using Orleans.Storage;
using Orleans.Streams;
using Orleans.TestingHost;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Only persisted maps leave the management service (docs/epoch-protocol.md): while a write of the
/// map is held open nobody sees the new map; a failed write, or one that loses the race with
/// another activation, publishes nothing; and no party ever sees two maps with one epoch and
/// different content.
/// </summary>
public sealed class PersistedMapTests(GatedMapWritesFixture fixture) : IClassFixture<GatedMapWritesFixture>, IAsyncLifetime
{
    private readonly ConcurrentBag<(string Where, ClusterMap Map)> _observed = [];
    private StreamSubscriptionHandle<ClusterMap>? _subscription;

    public async Task InitializeAsync()
    {
        var stream = fixture.Cluster.Client.GetStreamProvider(ClusterMapStream.ProviderName)
            .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
        _subscription = await stream.SubscribeAsync((map, _) =>
        {
            _observed.Add(("stream", map));
            return Task.CompletedTask;
        });
    }

    public async Task DisposeAsync() => await _subscription!.UnsubscribeAsync();

    [Fact]
    public async Task A_map_whose_write_is_held_is_never_observed_and_a_failed_write_publishes_nothing()
    {
        var before = await fixture.Management.GetMapAsync();
        fixture.Gate.Hold();
        var create = fixture.Client.CreateVolumeAsync("held", 4L << 20, 2);
        await fixture.Gate.Arrived.WaitAsync(TimeSpan.FromSeconds(30));
        for (var i = 0; i < 20; i++)
        {
            await ObserveAsync();
            await Task.Delay(25);
        }
        Assert.All(_observed, o => Assert.True(o.Map.Epoch <= before.Epoch, $"{o.Where} saw epoch {o.Map.Epoch} while its write was held"));
        Assert.All(_observed, o => Assert.Null(o.Map.FindVolume("held")));

        fixture.Gate.Release(fail: true);
        var failure = await Assert.ThrowsAsync<ManagementUnavailableException>(() => create);
        Assert.Contains("the database did not answer", failure.Message, StringComparison.Ordinal);
        await ObserveAsync();
        Assert.Null((await fixture.Management.GetMapAsync()).FindVolume("held"));

        // The next change commits, on the map reloaded from PostgreSQL.
        var created = await Eventually.RetryAsync(() => fixture.Client.CreateVolumeAsync("held", 4L << 20, 2));
        var after = await fixture.Management.GetMapAsync();
        Assert.Equal(before.Epoch + 1, after.Epoch);
        Assert.Equal(created.VolumeId, after.FindVolume("held")!.VolumeId);
        await ObserveAsync();
        AssertOneContentPerEpoch();
    }

    [Fact]
    public async Task A_management_activation_that_loses_the_etag_race_publishes_nothing_and_reloads()
    {
        // Another activation (as after a split in membership) writes the next map straight to PostgreSQL.
        var inner = ((InProcessSiloHandle)fixture.Cluster.Silos[0]).SiloHost.Services.GetRequiredKeyedService<IGrainStorage>(GatedMapWritesFixture.InnerStoreName);
        var grainId = GrainId.Create("ostor-management", IManagementServiceGrain.DefaultKey);
        var stored = new GrainState<ManagementState>(new ManagementState());
        await inner.ReadStateAsync("cluster", grainId, stored);
        var map = stored.State!.Map;
        var marker = new VolumeTombstone(Guid.NewGuid(), "written-by-the-other-activation", map.Epoch + 1, []);
        var theirs = map with { Epoch = map.Epoch + 1, Tombstones = map.Tombstones.Add(marker) };
        stored.State.Map = theirs;
        await inner.WriteStateAsync("cluster", grainId, stored);

        // The live activation's next change loses the race: it publishes nothing and deactivates;
        // the change then commits on the reloaded map.
        await Eventually.RetryAsync(() => fixture.Client.CreateVolumeAsync("after-race", 4L << 20, 2));
        var after = await fixture.Management.GetMapAsync();
        Assert.True(after.Epoch > theirs.Epoch);
        Assert.NotNull(after.FindTombstone(marker.VolumeId));
        Assert.NotNull(after.FindVolume("after-race"));
        await ObserveAsync();
        Assert.All(_observed.Where(o => o.Map.Epoch == theirs.Epoch), o => Assert.NotNull(o.Map.FindTombstone(marker.VolumeId)));
        AssertOneContentPerEpoch();
    }

    /// <summary>What management, the client and every storage server (its saved map) hold now.</summary>
    private async Task ObserveAsync()
    {
        var map = await fixture.Management.GetMapAsync();
        _observed.Add(("get-map", map));
        _observed.Add(("client", fixture.Client.Maps.Current));
        foreach (var host in map.Hosts.Where(h => h.State == HostState.Up))
        {
            if ((await fixture.Server(host.HostId).GetDiskReportAsync()).LastMap is { } saved)
            {
                _observed.Add((host.HostId, saved));
            }
        }
    }

    private void AssertOneContentPerEpoch()
    {
        var serializer = fixture.Cluster.Client.ServiceProvider.GetRequiredService<Serializer>();
        foreach (var epoch in _observed.GroupBy(o => o.Map.Epoch))
        {
            var contents = epoch.GroupBy(o => Convert.ToBase64String(serializer.SerializeToArray(o.Map))).ToList();
            Assert.True(contents.Count == 1,
                $"epoch {epoch.Key} was seen with {contents.Count} different contents, by: {string.Join("; ", contents.Select(c => string.Join(", ", c.Select(o => o.Where))))}");
        }
    }
}
