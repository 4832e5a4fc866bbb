using Microsoft.Extensions.DependencyInjection;
using Orleans.Configuration;
using Orleans.TestingHost;
using OrleansStorage.Client.Library;
using OrleansStorage.Hosting;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Silo.Hosting;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A TestingHost cluster of real OrleansStorage hosts on a private PostgreSQL: the cluster map and
/// stream pub-sub state in the database (membership is the TestingHost's own; the ADO.NET
/// clustering provider is proven by <c>SiloProgramTests</c>), each silo a host with its own
/// HostId (host-1, host-2, ...) and data directory. Restarted silos get their HostId back.
/// </summary>
public class StorageClusterFixture : IAsyncLifetime
{
    public const int SegmentSize = 1 << 20;
    public const int PlacementGroups = 16;

    // In-process silos are built from static configuration delegates; the fixture under
    // construction publishes itself here so those delegates reach its state.
    private static StorageClusterFixture? _configuring;

    private readonly Dictionary<string, string> _hostOfSilo = [];
    private readonly SortedSet<string> _freeHostIds = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private string? _preferredHostId;
    private readonly HashSet<string> _usedHostIds = new(StringComparer.Ordinal);

    protected virtual int InitialHosts => 3;

    public InProcessTestCluster Cluster { get; private set; } = null!;
    public OstorClient Client { get; private set; } = null!;
    public string ConnectionString { get; private set; } = "";
    public string DataRoot { get; } = Path.Combine(Path.GetTempPath(), "ostor-test-hosts-" + Guid.NewGuid().ToString("N")[..12]);
    public SwitchablePushFilter PushFilter { get; } = new();
    public SwitchableReplicaFaults ReplicaFaults { get; } = new();
    public SwitchableDiskFaults DiskFaults { get; } = new();
    public bool Available { get; private set; }

    public IManagementServiceGrain Management => Cluster.Client.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey);

    public IStorageServerGrain Server(string hostId) => Cluster.Client.GetGrain<IStorageServerGrain>(hostId);

    public string DataDirectoryOf(string hostId) => Path.Combine(DataRoot, hostId);

    public async Task InitializeAsync()
    {
        var postgres = await PrivatePostgres.GetAsync();
        if (postgres is null)
        {
            return;
        }
        ConnectionString = await postgres.CreateDatabaseAsync("ostor_test");
        for (var i = 1; i <= InitialHosts; i++)
        {
            _freeHostIds.Add($"host-{i}");
        }

        var builder = new InProcessTestClusterBuilder((short)InitialHosts);
        builder.Options.ClusterId = "ostor-test-" + Guid.NewGuid().ToString("N")[..8];
        builder.Options.ServiceId = "ostor-test";
        var connectionString = ConnectionString;
        builder.ConfigureSilo((options, silo) =>
        {
            var fixture = _configuring!;
            var hostId = fixture.HostIdForSilo(options.SiloName);
            SiloConfiguration.AddPostgresStores(silo, connectionString, fixture.PostgresClusterStoreName);
            silo.AddOrleansStorageHost(o =>
            {
                o.HostId = hostId;
                o.DataDirectory = fixture.DataDirectoryOf(hostId);
                o.CapacityBytes = 1L << 40;
                // The silent-corruption tests decide when a scrub runs; BackgroundScrubTests runs the background one.
                o.ScrubBytesPerSecond = 0;
            });
            silo.Services.AddSingleton<IClusterMapPushFilter>(fixture.PushFilter);
            silo.Services.AddSingleton<IReplicaWriteFaults>(fixture.ReplicaFaults);
            silo.Services.AddSingleton<Segments.IDiskFaults>(fixture.DiskFaults);
            fixture.ConfigureSilo(silo);
            silo.Services.Configure<ManagementOptions>(o =>
            {
                o.SegmentSizeBytes = SegmentSize;
                o.PlacementGroupsPerVolume = PlacementGroups;
            });
        });
        builder.ConfigureClient(client =>
        {
            client.AddMemoryStreams(ClusterMapStream.ProviderName);
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = new OstorClientOptions().RequestTimeout);
        });

        _configuring = this;
        Cluster = builder.Build();
        await Cluster.DeployAsync();
        await WaitForHostsAsync(InitialHosts);
        Client = await OstorClient.AttachAsync(Cluster.Client);
        Available = true;
    }

    /// <summary>The name the PostgreSQL storage of the map is registered under; another than the one management reads lets a fixture put its own storage in front.</summary>
    protected virtual string PostgresClusterStoreName => StorageNames.ClusterStore;

    /// <summary>Extra configuration of every silo this fixture starts.</summary>
    protected virtual void ConfigureSilo(ISiloBuilder silo)
    {
    }

    /// <summary>
    /// Starts one more silo: it takes <paramref name="hostId"/> back (a released one, with its
    /// data), or with none a HostId no silo has had (a new, empty host).
    /// </summary>
    public async Task<string> StartSiloAsync(string? hostId = null)
    {
        _configuring = this;
        lock (_gate)
        {
            _preferredHostId = hostId ?? NewHostId();
        }
        var silo = await Cluster.StartAdditionalSiloAsync();
        return HostIdOfSilo(silo.Name);
    }

    /// <summary>Kills (no graceful shutdown) the silo of a host; its HostId is free for the next silo started.</summary>
    public async Task KillHostAsync(string hostId)
    {
        var silo = Cluster.Silos.Single(s => HostIdOfSilo(s.Name) == hostId);
        await KillSiloAsync(silo);
        ReleaseHostId(silo.Name);
    }

    /// <summary>
    /// Kills a silo as a crash would. TestingHost's kill still disposes the silo's services, and a
    /// segment store disposed writes its clean-shutdown marker: told first, it leaves none, so the
    /// host's next start takes the unclean-shutdown path (suspect segments) as after kill -9.
    /// </summary>
    public async Task KillSiloAsync(InProcessSiloHandle silo)
    {
        silo.SiloHost.Services.GetRequiredService<Segments.SegmentStore>().CrashOnDispose();
        await Cluster.KillSiloAsync(silo);
    }

    public async Task DisposeAsync()
    {
        if (!Available)
        {
            return;
        }
        await Client.DisposeAsync();
        await Cluster.DisposeAsync();
        try
        {
            Directory.Delete(DataRoot, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Skips the calling test, loudly, when PostgreSQL is not installed at all (fails it in CI).</summary>
    public void SkipIfUnavailable() =>
        Prerequisites.Require(Available, "PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);

    /// <summary>Marks a host's HostId free for the next silo to start (its silo was stopped or killed).</summary>
    public void ReleaseHostId(string siloName)
    {
        lock (_gate)
        {
            if (_hostOfSilo.Remove(siloName, out var hostId))
            {
                _freeHostIds.Add(hostId);
            }
        }
    }

    public string HostIdOfSilo(string siloName)
    {
        lock (_gate)
        {
            return _hostOfSilo[siloName];
        }
    }

    private string HostIdForSilo(string siloName)
    {
        lock (_gate)
        {
            if (_hostOfSilo.TryGetValue(siloName, out var known))
            {
                return known;
            }
            var hostId = _preferredHostId is { } preferred && !_hostOfSilo.ContainsValue(preferred) ? preferred
                : _freeHostIds.Count > 0 ? _freeHostIds.Min!
                : NewHostId();
            _usedHostIds.Add(hostId);
            _preferredHostId = null;
            _freeHostIds.Remove(hostId);
            _hostOfSilo[siloName] = hostId;
            return hostId;
        }
    }

    /// <summary>The first host-N that no silo has used.</summary>
    private string NewHostId()
    {
        for (var n = 1; ; n++)
        {
            var candidate = $"host-{n}";
            if (!_hostOfSilo.ContainsValue(candidate) && !_freeHostIds.Contains(candidate) && !_usedHostIds.Contains(candidate))
            {
                return candidate;
            }
        }
    }

    /// <summary>Waits until <paramref name="count"/> hosts are registered and each storage server answers.</summary>
    /// <summary>A host to fail that does not run the management service (its failover is another test's subject).</summary>
    public async Task<string> PickVictimAsync() => (await HostsByManagementAsync()).Others.Max(StringComparer.Ordinal)!;

    /// <summary>The Up host whose silo runs the management service, and the other Up hosts.</summary>
    public async Task<(string Management, List<string> Others)> HostsByManagementAsync()
    {
        var silo = (await Management.GetStatusAsync()).Silo;
        var map = await Management.GetMapAsync();
        string? management = null;
        var others = new List<string>();
        foreach (var host in map.Hosts.Where(h => h.State == HostState.Up))
        {
            if ((await Server(host.HostId).GetStatusAsync()).SiloAddress == silo)
            {
                management = host.HostId;
            }
            else
            {
                others.Add(host.HostId);
            }
        }
        return (management ?? throw new InvalidOperationException($"no host runs on the management service's silo {silo}"), others);
    }

    public async Task WaitForHostsAsync(int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                var map = await Management.GetMapAsync();
                if (map.Hosts.Length >= count)
                {
                    await Task.WhenAll(map.Hosts.Select(h => Server(h.HostId).GetStatusAsync()));
                    return;
                }
            }
            catch (Exception) when (DateTime.UtcNow < deadline)
            {
            }
            if (DateTime.UtcNow >= deadline)
            {
                throw new TimeoutException($"{count} hosts did not register within 60 s");
            }
            await Task.Delay(200);
        }
    }
}

[CollectionDefinition(Name)]
public sealed class StorageClusterCollection : ICollectionFixture<StorageClusterFixture>
{
    public const string Name = "storage cluster";
}
