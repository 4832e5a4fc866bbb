using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Serialization;
using Orleans.Storage;
using Orleans.TestingHost;
using OrleansStorage.Client.Library;
using OrleansStorage.Identity;
using OrleansStorage.Hosting;
using OrleansStorage.Maps;

namespace OrleansStorage.Benchmarks.Micro;

/// <summary>
/// A volume write and read through the client library, the host's data port (over loopback TCP)
/// and the segment store of a real one-silo, in-process cluster: the data path minus NBD and
/// replicas. The allocation column counts the whole process (client and silo): in steady state no
/// request should allocate anything the size of its payload (docs/data-protocol.md).
/// </summary>
[MemoryDiagnoser]
public class DataPathBenchmarks
{
    private const long VolumeSize = 256L << 20;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-bench-grain-" + Guid.NewGuid().ToString("N")[..8]);
    private InProcessTestCluster _cluster = null!;
    private OstorClient _client = null!;
    private VolumeHandle _volume = null!;
    private byte[] _payload = null!;
    private byte[] _buffer = null!;
    private long _next;

    [Params(4096, 1024 * 1024)]
    public int PayloadBytes { get; set; }

    [GlobalSetup]
    public void Setup() => SetupAsync().GetAwaiter().GetResult();

    private async Task SetupAsync()
    {
        var builder = new InProcessTestClusterBuilder(1);
        var root = _root;
        builder.ConfigureSilo((_, silo) =>
        {
            foreach (var name in new[] { StorageNames.ClusterStore, StorageNames.PubSubStore })
            {
                // The binary serializer, as on PostgreSQL: the map's records have no JSON constructors.
                silo.AddMemoryGrainStorage(name, (OptionsBuilder<MemoryGrainStorageOptions> options) => options.Configure<Serializer>((o, serializer) =>
                    o.GrainStorageSerializer = new OrleansGrainStorageSerializer(serializer)));
            }
            silo.Services.AddSingleton<IClusterIdentityStore, ProcessClusterIdentityStore>();
            silo.AddOrleansStorageHost(o =>
            {
                o.HostId = "host-1";
                o.DataDirectory = Path.Combine(root, "host-1");
                o.CapacityBytes = 1L << 40;
            });
        });
        builder.ConfigureClient(client => client.AddMemoryStreams(ClusterMapStream.ProviderName));
        _cluster = builder.Build();
        await _cluster.DeployAsync();
        _client = await OstorClient.AttachAsync(_cluster.Client);
        while ((await _client.GetMapAsync()).Hosts.Length == 0)
        {
            await Task.Delay(100);
        }
        await _client.CreateVolumeAsync("bench", VolumeSize, 1);
        _volume = await _client.OpenVolumeAsync("bench");
        _payload = new byte[PayloadBytes];
        new Random(2).NextBytes(_payload);
        _buffer = new byte[PayloadBytes];
        for (long offset = 0; offset < VolumeSize; offset += 4 << 20)
        {
            await _volume.WriteAsync(offset, new byte[4 << 20]);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _client.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _cluster.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Directory.Delete(_root, recursive: true);
    }

    private long NextOffset() => _next = (_next + PayloadBytes) % VolumeSize;

    [Benchmark]
    public Task VolumeWrite() => _volume.WriteAsync(NextOffset(), _payload);

    [Benchmark]
    public Task VolumeRead() => _volume.ReadAsync(NextOffset(), _buffer);
}
