using OrleansStorage.Client.Library;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Simulated power loss under random I/O (docs/failures.md, "What is durable when"): three hosts
/// from the real silo configuration, a factor-2 and a factor-3 volume, random writes, FUA writes,
/// trims and flushes, and now and then the power of one host or of all of them cut (everything
/// not fsynced is lost), the hosts restarted, resynced, and checked: every write acknowledged with
/// FUA or before an acknowledged flush reads back, and the replicas of every segment are identical.
/// The seed is printed; OSTOR_CRASH_SEED=N replays a run.
/// </summary>
public sealed class PowerLossTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int MiB = 1 << 20;
    private const int VolumeSize = 8 * MiB;
    private static readonly string[] Hosts = ["host-1", "host-2", "host-3"];
    private readonly Eventually _eventually = new(output);
    private readonly PowerLossSimulator _power = new();
    private ConfiguredSilos _silos = null!;

    public async Task InitializeAsync()
    {
        _silos = await ConfiguredSilos.OnNewDatabaseAsync("ostor_power", "power");
        _silos.DiskFaults = _power;
    }

    public async Task DisposeAsync() => await _silos.DisposeAsync();

    [Fact]
    public async Task Acknowledged_durable_writes_survive_random_power_losses_and_replicas_converge()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("OSTOR_CRASH_SEED"), out var replay) ? replay : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay: OSTOR_CRASH_SEED={seed} infra/test --filter FullyQualifiedName~PowerLossTests)");
        var random = new Random(seed);
        var rounds = Prerequisites.InCi ? 8 : 20;
        const int OperationsPerRound = 30;

        foreach (var hostId in Hosts)
        {
            _power.Baseline(hostId, _silos.VolumesRootOf(hostId));
            await _silos.StartAsync(hostId);
        }
        var client = await _silos.ConnectAsync();
        try
        {
            await _eventually.MapAsync(client.GetMapAsync, m => m.Hosts.Count(h => h.State == HostState.Up) == Hosts.Length, "three hosts Up");
            var volumes = new List<ModelVolume>();
            foreach (var (name, factor) in new[] { ("p2", 2), ("p3", 3) })
            {
                await client.CreateVolumeAsync(name, VolumeSize, factor);
                volumes.Add(new ModelVolume(name));
            }

            var operations = 0;
            for (var round = 1; round <= rounds; round++)
            {
                for (var i = 0; i < OperationsPerRound; i++, operations++)
                {
                    await RandomOperationAsync(client, volumes[random.Next(volumes.Count)], random);
                }
                var crashed = random.Next(4) == 0 ? Hosts : [Hosts[random.Next(Hosts.Length)]];
                output.WriteLine($"round {round}: {operations} operations so far; power cut on {string.Join(", ", crashed)}");
                client = await PowerCycleAsync(client, crashed);
                foreach (var volume in volumes)
                {
                    await volume.CheckAfterPowerLossAsync(client, _power, seed, round);
                }
            }
            output.WriteLine($"{operations} operations, {rounds} power cuts, seed {seed}: every durable write read back, replicas identical");
        }
        finally
        {
            await client.DisposeAsync();
        }
    }

    private static async Task RandomOperationAsync(OstorClient client, ModelVolume volume, Random random)
    {
        var handle = await client.OpenVolumeAsync(volume.Name);
        var length = random.Next(1, 64 * 1024);
        var offset = random.NextInt64(0, VolumeSize - length);
        var choice = random.Next(10);
        if (choice < 6)
        {
            var data = new byte[length];
            random.NextBytes(data);
            var forceUnitAccess = random.Next(3) == 0;
            await handle.WriteAsync(offset, data, forceUnitAccess);
            volume.Wrote(offset, data, durable: forceUnitAccess);
        }
        else if (choice < 7)
        {
            await handle.TrimAsync(offset, length);
            volume.Wrote(offset, new byte[length], durable: false);
        }
        else if (choice < 9)
        {
            await handle.FlushAsync();
            volume.Flushed();
        }
        else
        {
            // Without a power cut, every acknowledged write reads back.
            var back = new byte[length];
            await handle.ReadAsync(offset, back);
            Assert.True(back.AsSpan().SequenceEqual(volume.Acknowledged.AsSpan((int)offset, length)), $"volume '{volume.Name}' read at {offset} differs from what was acknowledged");
        }
    }

    /// <summary>Cuts the power of the hosts, rolls their disks back to what was durable, starts them again and waits until every group is whole.</summary>
    private async Task<OstorClient> PowerCycleAsync(OstorClient client, string[] crashed)
    {
        foreach (var hostId in crashed)
        {
            _power.PowerOff(hostId);
        }
        if (crashed.Length == Hosts.Length)
        {
            await client.DisposeAsync();
        }
        foreach (var hostId in crashed)
        {
            await _silos.StopAsync(hostId);
            var lost = _power.RestoreAfterPowerLoss(hostId, _silos.VolumesRootOf(hostId));
            output.WriteLine($"  {hostId}: {lost} files rolled back to their last fsync");
        }
        foreach (var hostId in crashed)
        {
            _power.Baseline(hostId, _silos.VolumesRootOf(hostId));
            await _silos.StartAsync(hostId);
        }
        if (crashed.Length == Hosts.Length)
        {
            client = await _silos.ConnectAsync();
        }
        // Settled: every host Up and serving this epoch, every group whole, and the map still for a
        // moment (a restarted host's resync requests and management's view of membership may
        // still be on their way when the map first looks whole).
        var settled = client;
        await _eventually.UntilAsync(async () =>
        {
            var map = await settled.GetMapAsync();
            if (!map.Hosts.All(h => h.State == HostState.Up) || !Eventually.GroupsFull(map)
                || !map.Volumes.All(v => v.PlacementGroups.All(pg => pg.Replicas.Length == v.ReplicationFactor)))
            {
                return false;
            }
            foreach (var host in map.Hosts)
            {
                if ((await settled.Cluster.GetGrain<Storage.IStorageServerGrain>(host.HostId).GetStatusAsync()).Epoch != map.Epoch)
                {
                    return false;
                }
            }
            await Task.Delay(TimeSpan.FromSeconds(2));
            return (await settled.GetMapAsync()).Epoch == map.Epoch;
        }, "every host Up at the current epoch and every group whole again", TimeSpan.FromSeconds(120));
        return client;
    }

    /// <summary>What the test knows of a volume: the bytes acknowledged writes left, and which of them must survive a power loss.</summary>
    private sealed class ModelVolume(string name)
    {
        private readonly bool[] _durable = Enumerable.Repeat(true, VolumeSize).ToArray();
        private readonly List<(long Offset, int Length, bool Durable, byte First, string Kind)> _log = [];

        public string Name { get; } = name;

        public byte[] Acknowledged { get; } = new byte[VolumeSize];

        public void Wrote(long offset, byte[] data, bool durable)
        {
            _log.Add((offset, data.Length, durable, data[0], $"write sha {Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(data))[..6]}"));
            data.CopyTo(Acknowledged, offset);
            Array.Fill(_durable, durable, (int)offset, data.Length);
        }

        public void Flushed()
        {
            _log.Add((0, VolumeSize, true, 0, "flush"));
            Array.Fill(_durable, true);
        }

        /// <summary>What each host holds at one byte, for a failure message.</summary>
        private static async Task<string> DescribeByteAsync(OstorClient client, VolumeInfo volume, int at)
        {
            var segment = at / volume.SegmentSizeBytes;
            var group = volume.PlacementGroupOf(segment);
            var parts = new List<string> { $"segment {segment}, group {group.Index}: {group.Describe()}" };
            foreach (var host in (await client.GetMapAsync()).Hosts)
            {
                var server = client.Cluster.GetGrain<Storage.IStorageServerGrain>(host.HostId);
                var bytes = (await server.ReadLocalAsync(new Storage.SegmentAddress(volume.VolumeId, segment), at % volume.SegmentSizeBytes, 1)).Bytes;
                parts.Add($"{host.HostId} holds {bytes.Span[0]}");
            }
            return string.Join(", ", parts);
        }

        /// <summary>The write version of every segment on every host holding it, and the fsync history of its files: for a failure message.</summary>
        private static async Task<string> DescribeDivergenceAsync(OstorClient client, VolumeInfo volume, PowerLossSimulator power)
        {
            var map = await client.GetMapAsync();
            var parts = new List<string>();
            foreach (var group in volume.PlacementGroups)
            {
                foreach (var host in group.Replicas)
                {
                    var versions = await client.Cluster.GetGrain<Storage.IStorageServerGrain>(host).GetSegmentVersionsAsync(map.Epoch, volume.VolumeId, group.Index);
                    parts.Add($"group {group.Index} on {host}: versions {string.Join(",", versions.Select(v => $"{v >> 32}.{v & 0xffffffff}"))}");
                }
            }
            var directory = $"{volume.VolumeId:N}"[..8];
            parts.AddRange(Hosts.Select(h => $"{h} history: {power.History(h, directory, last: 80)}"));
            return string.Join("; ", parts);
        }

        public async Task CheckAfterPowerLossAsync(OstorClient client, PowerLossSimulator power, int seed, int round)
        {
            var handle = await client.OpenVolumeAsync(Name);
            var now = new byte[VolumeSize];
            await handle.ReadAsync(0, now);
            for (var i = 0; i < VolumeSize; i++)
            {
                if (_durable[i] && now[i] != Acknowledged[i])
                {
                    var file = $"{handle.Info.VolumeId:N}"[..8] + $"/{i / handle.Info.SegmentSizeBytes:D10}.seg";
                    Assert.Fail($"seed {seed}, round {round}: volume '{Name}' byte {i} was durable as {Acknowledged[i]} but reads {now[i]} after the power cut; "
                        + await DescribeByteAsync(client, handle.Info, i) + "; writes to it: " + string.Join(", ", _log.Where(w => w.Offset <= i && i < w.Offset + w.Length).TakeLast(6))
                        + "; fsyncs: " + string.Join(" | ", Hosts.Select(h => $"{h}: {power.History(h, file)}")));
                }
            }
            var problems = await handle.VerifyReplicasAsync();
            if (problems.Count > 0)
            {
                Assert.Fail($"seed {seed}, round {round}: volume '{Name}': {string.Join("; ", problems)}; groups: "
                    + string.Join(" | ", handle.Info.PlacementGroups.Select(pg => $"{pg.Index}: {pg.Describe()}"))
                    + "; " + await DescribeDivergenceAsync(client, handle.Info, power));
            }
            // What reads now is the new truth. Bytes that were not durable stay so: hosts whose
            // power stayed on may still hold them only in their page cache, until a flush.
            now.CopyTo(Acknowledged, 0);
        }
    }
}
