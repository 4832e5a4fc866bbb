using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrleansStorage.Client.Library;
using OrleansStorage.Identity;
using OrleansStorage.Silo.Hosting;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// Silos built by the real silo configuration (what ostor-silo runs: ADO.NET clustering and grain
/// storage on PostgreSQL, the data-directory check), in this process, each a host with its own
/// ports and data directory under one root. A host stopped and started again keeps its ports.
/// </summary>
public sealed class ConfiguredSilos(string connectionString, string clusterId) : IAsyncDisposable
{
    private readonly Dictionary<string, IHost> _running = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Silo, int Gateway)> _ports = new(StringComparer.Ordinal);

    /// <summary>Silos of a cluster of their own (id <paramref name="clusterPrefix"/>-random) on a new database of the private PostgreSQL.</summary>
    public static async Task<ConfiguredSilos> OnNewDatabaseAsync(string database, string clusterPrefix)
    {
        var postgres = await PrivatePostgres.GetAsync() ?? throw new InvalidOperationException("PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        return new ConfiguredSilos(await postgres.CreateDatabaseAsync(database), clusterPrefix + "-" + Guid.NewGuid().ToString("N")[..6]);
    }

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "ostor-silos-" + Guid.NewGuid().ToString("N")[..8]);

    public string ConnectionString { get; set; } = connectionString;

    public string ClusterId { get; } = clusterId;

    /// <summary>Given to every silo started from now on as its <see cref="Segments.IDiskFaults"/> (fsync failures or a power-loss simulation).</summary>
    public Segments.IDiskFaults? DiskFaults { get; set; }

    public string VolumesRootOf(string hostId) => Path.Combine(DataDirectoryOf(hostId), HostDisk.VolumesFolderName);

    public string DataDirectoryOf(string hostId) => Path.Combine(Root, hostId);

    public IHost Silo(string hostId) => _running[hostId];

    public IEnumerable<string> Gateways => _running.Keys.Select(h => $"127.0.0.1:{_ports[h].Gateway}");

    /// <summary>
    /// Starts a host as ostor-silo would: the data-directory check first (its refusal is thrown as
    /// <see cref="HostStartupException"/>), then the silo.
    /// </summary>
    public async Task<IHost> StartAsync(string hostId, IDictionary<string, string?>? overrides = null)
    {
        if (!_ports.TryGetValue(hostId, out var ports))
        {
            ports = (Ports.Free(), Ports.Free());
            _ports[hostId] = ports;
        }
        var settings = Settings(hostId, ports.Silo, ports.Gateway);
        foreach (var (key, value) in overrides ?? new Dictionary<string, string?>())
        {
            settings[key] = value;
        }
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        if (DiskFaults is { } faults)
        {
            builder.Services.AddSingleton(faults);
        }
        if (Environment.GetEnvironmentVariable("OSTOR_TEST_LOGS") is { Length: > 0 })
        {
            // The silos' own log lines (OrleansStorage only) on standard output, for a failing run.
            builder.Logging.AddSimpleConsole(o => o.SingleLine = true).AddFilter((category, level) => category?.StartsWith("OrleansStorage", StringComparison.Ordinal) == true && level >= LogLevel.Information);
        }
        builder.UseOrleans(silo => SiloConfiguration.ConfigureSilo(silo, builder.Configuration));
        var host = builder.Build();
        try
        {
            await host.Services.GetRequiredService<DataDirectoryCheck>().EnsureAsync(CancellationToken.None);
            await host.StartAsync();
        }
        catch
        {
            host.Dispose();
            throw;
        }
        _running[hostId] = host;
        return host;
    }

    public async Task StopAsync(string hostId)
    {
        if (_running.Remove(hostId, out var host))
        {
            await host.StopAsync();
            host.Dispose();
        }
    }

    public async Task StopAllAsync()
    {
        foreach (var hostId in _running.Keys.ToList())
        {
            await StopAsync(hostId);
        }
    }

    public Task<OstorClient> ConnectAsync()
    {
        var options = new OstorClientOptions { ClusterId = ClusterId, ServiceId = "ostor" };
        options.Gateways.Clear();
        foreach (var gateway in Gateways)
        {
            options.Gateways.Add(gateway);
        }
        return OstorClient.ConnectAsync(options);
    }

    /// <summary>
    /// SHA-256 of every file under every host's data directory, by relative path: "changed nothing"
    /// made checkable. Not the management generation a host keeps (HostDisk.LeaseGenerationFileName):
    /// it follows management's activations, not maps or data.
    /// </summary>
    public SortedDictionary<string, string> Checksums()
    {
        var sums = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (!Directory.Exists(Root))
        {
            return sums;
        }
        foreach (var file in Directory.EnumerateFiles(Root, "*", SearchOption.AllDirectories)
            .Where(f => Path.GetFileName(f) != HostDisk.LeaseGenerationFileName))
        {
            sums[Path.GetRelativePath(Root, file)] = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));
        }
        return sums;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAllAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private Dictionary<string, string?> Settings(string hostId, int siloPort, int gatewayPort) => new()
    {
        ["Storage:HostId"] = hostId,
        ["Storage:DataDirectory"] = DataDirectoryOf(hostId),
        ["Storage:CapacityBytes"] = "1099511627776",
        ["Cluster:ClusterId"] = ClusterId,
        ["Cluster:ServiceId"] = "ostor",
        ["Cluster:AdvertisedAddress"] = "127.0.0.1",
        ["Cluster:SiloPort"] = siloPort.ToString(CultureInfo.InvariantCulture),
        ["Cluster:GatewayPort"] = gatewayPort.ToString(CultureInfo.InvariantCulture),
        ["Cluster:PostgresConnectionString"] = ConnectionString,
        ["Management:SegmentSizeBytes"] = "1048576",
        ["Management:PlacementGroupsPerVolume"] = "8",
        ["Management:MembershipSettleTime"] = "00:00:01",
        ["Membership:ProbeTimeout"] = "00:00:01",
        ["Membership:NumMissedProbesLimit"] = "1",
    };
}
