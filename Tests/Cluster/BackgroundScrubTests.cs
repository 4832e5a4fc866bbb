using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// The background scrub of real silos (the silo's own configuration, a scrub pass every 2 s):
/// bad blocks in the primary and in a secondary are repaired with no client request, and
/// <c>ostor status</c>' data says so.
/// </summary>
public sealed class BackgroundScrubTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly string[] Hosts = ["host-1", "host-2", "host-3"];
    private readonly Eventually _eventually = new(output);
    private ConfiguredSilos _silos = null!;

    public async Task InitializeAsync()
    {
        _silos = await ConfiguredSilos.OnNewDatabaseAsync("ostor_scrub", "scrub");
    }

    public async Task DisposeAsync() => await _silos.DisposeAsync();

    [Fact]
    public async Task Bad_blocks_are_repaired_by_the_background_scrub_without_any_client_request()
    {
        var scrubbing = new Dictionary<string, string?> { ["Storage:ScrubInterval"] = "00:00:02", ["Storage:ScrubIdleAfterClientIo"] = "00:00:00.500" };
        foreach (var hostId in Hosts)
        {
            await _silos.StartAsync(hostId, scrubbing);
        }
        await using var client = await _silos.ConnectAsync();
        await _eventually.MapAsync(client.GetMapAsync, m => m.Hosts.Count(h => h.State == HostState.Up) == Hosts.Length, "three hosts Up");
        await client.CreateVolumeAsync("scrubbed", 4 << 20, 2);
        var volume = await client.OpenVolumeAsync("scrubbed");
        var data = Replicas.RandomBytes(2 << 20, seed: 3);
        await volume.WriteAsync(0, data);
        await volume.FlushAsync();

        var group = volume.Info.PlacementGroupOf(1);
        var directory = volume.VolumeId.ToString("N");
        foreach (var (hostId, offset) in new[] { (group.Primary, 4096 * 3 + 5), (group.Replicas[1], 4096 * 40) })
        {
            using var file = new FileStream(Path.Combine(_silos.VolumesRootOf(hostId), directory, "0000000001.seg"), FileMode.Open, FileAccess.ReadWrite);
            file.Position = offset;
            file.WriteByte(0x5a);
        }

        await _eventually.UntilAsync(async () =>
        {
            var status = await client.GetStatusAsync();
            return status.Hosts.Sum(h => h.Server?.BlocksRepaired ?? 0) >= 2
                && status.Hosts.Any(h => h.Server?.Scrubs.Any(s => s.VolumeId == volume.VolumeId && s.BlocksRepaired > 0) == true);
        }, "the background scrub repaired both bad blocks and recorded a pass", TimeSpan.FromSeconds(60));
        Assert.Empty(await volume.VerifyReplicasAsync());
        var back = new byte[data.Length];
        await volume.ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back));
    }
}
