using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A host whose data directory is a 3 MiB file system (a tmpfs) that fills up under writes: the
/// first ENOSPC takes the host out of service, its groups are refilled on the other hosts, the
/// epoch moves a handful of times (not once a second), and the client sees no error.
/// </summary>
public sealed class FullDiskTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly string[] Hosts = ["host-1", "host-2", "host-3"];
    private readonly Eventually _eventually = new(output);
    private ConfiguredSilos _silos = null!;
    private string? _mounted;

    public async Task InitializeAsync()
    {
        Prerequisites.Require(Environment.UserName == "root", "mounting a tmpfs needs root");
        _silos = await ConfiguredSilos.OnNewDatabaseAsync("ostor_full", "full");
    }

    public async Task DisposeAsync()
    {
        await _silos.StopAllAsync();
        if (_mounted is not null)
        {
            await ExternalProgram.RunAsync("umount", [_mounted]);
        }
        await _silos.DisposeAsync();
    }

    [Fact]
    public async Task A_host_whose_disk_fills_up_goes_out_and_its_groups_are_refilled_elsewhere()
    {
        _mounted = _silos.DataDirectoryOf("host-3");
        Directory.CreateDirectory(_mounted);
        await ExternalProgram.RunAsync("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", _mounted]);
        foreach (var hostId in Hosts)
        {
            await _silos.StartAsync(hostId);
        }
        await using var client = await _silos.ConnectAsync();
        await _eventually.MapAsync(client.GetMapAsync, m => m.Hosts.Count(h => h.State == HostState.Up) == Hosts.Length, "three hosts Up");
        await client.CreateVolumeAsync("filling", 16 << 20, 2);
        var before = (await client.GetMapAsync()).Epoch;
        Assert.Contains((await client.GetMapAsync()).FindVolume("filling")!.PlacementGroups, pg => pg.Contains("host-3"));

        var volume = await client.OpenVolumeAsync("filling");
        var data = Replicas.RandomBytes(12 << 20, seed: 5);
        await volume.WriteAsync(0, data); // host-3 runs out of space on the way: retried, never an error
        await volume.FlushAsync();

        var whole = await _eventually.MapAsync(client.GetMapAsync,
            m => m.FindHost("host-3")!.State == HostState.Out && Eventually.GroupsFull(m) && !m.AllGroups().Any(x => x.Group.References("host-3")),
            "host-3 Out and every group at full factor on the other hosts", TimeSpan.FromSeconds(120));
        output.WriteLine($"epoch {before} -> {whole.Epoch} from the full disk to full factor");
        Assert.True(whole.Epoch - before < 10, $"the epoch moved {whole.Epoch - before} times for one full disk");

        var back = new byte[data.Length];
        await volume.ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back), "a write acknowledged while host-3 filled up does not read back");
        Assert.Empty(await volume.VerifyReplicasAsync());
    }
}
