using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Serialization;
using Orleans.Storage;
using OrleansStorage.Auth;
using OrleansStorage.DataPort;
using OrleansStorage.Hosting;
using OrleansStorage.Identity;
using OrleansStorage.Leases;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Security;

namespace OrleansStorage.Silo.Hosting;

/// <summary>Turns configuration into an Orleans silo that is one OrleansStorage host.</summary>
public static class SiloConfiguration
{
    /// <summary>Short command-line switches for the settings people type most.</summary>
    public static IDictionary<string, string> SwitchMappings { get; } = new Dictionary<string, string>
    {
        ["--host-id"] = $"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.HostId)}",
        ["--data"] = $"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.DataDirectory)}",
        ["--capacity"] = $"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.CapacityBytes)}",
        ["--silo-port"] = $"{ClusterHostOptions.SectionName}:{nameof(ClusterHostOptions.SiloPort)}",
        ["--gateway-port"] = $"{ClusterHostOptions.SectionName}:{nameof(ClusterHostOptions.GatewayPort)}",
        ["--postgres"] = $"{ClusterHostOptions.SectionName}:{nameof(ClusterHostOptions.PostgresConnectionString)}",
        ["--data-port"] = $"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.DataPort)}",
        ["--pki"] = $"{ClusterHostOptions.SectionName}:{nameof(ClusterHostOptions.PkiDirectory)}",
        ["--recover"] = $"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.RecoverMap)}",
        ["--http-port"] = "Http:Port",
        ["--otlp-endpoint"] = "Telemetry:OtlpEndpoint",
    };

    /// <summary>The ADO.NET invariant of Npgsql; the providers default to SQL Server.</summary>
    public const string NpgsqlInvariant = "Npgsql";

    public const string MembershipSectionName = "Membership";

    public static void ConfigureSilo(ISiloBuilder silo, IConfiguration configuration)
    {
        var cluster = configuration.GetSection(ClusterHostOptions.SectionName).Get<ClusterHostOptions>() ?? new ClusterHostOptions();
        var storageSection = configuration.GetSection(StorageServerOptions.SectionName);
        var storage = storageSection.Get<StorageServerOptions>() ?? new StorageServerOptions();
        var problems = Validate(cluster, storage);
        if (problems.Count > 0)
        {
            throw new InvalidOperationException("invalid configuration: " + string.Join("; ", problems));
        }
        // Ours before Orleans binds: a port that another process holds is one line, never a shared port.
        var ports = new List<(string, int)> { ("silo", cluster.SiloPort), ("gateway", cluster.GatewayPort) };
        if (storage.DataPort > 0)
        {
            ports.Add(("data", storage.DataPort));
        }
        if (PortCheck.Taken(IPAddress.Parse(cluster.AdvertisedAddress), [.. ports]) is { } taken)
        {
            throw new InvalidOperationException(taken);
        }
        if (cluster.PkiDirectory.Length > 0)
        {
            var pki = new PkiDirectory(cluster.PkiDirectory);
            try
            {
                var trust = pki.LoadTrust();
                var identity = pki.LoadIdentity(CertificateRole.Host, storage.HostId);
                SiloTls.Configure(silo, trust, identity);
                silo.Services.AddSingleton(new DataPortServerTls(identity, trust));
                // TLS says who may connect; tickets say what each client may do once connected.
                silo.AddAccessControl(pki.LoadTicketKey(), trust.Authority, storage.HostId);
            }
            catch (Exception ex) when (ex is StorageException or IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            {
                throw new InvalidOperationException($"TLS (--pki {cluster.PkiDirectory}): {ex.Message}", ex);
            }
        }

        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = cluster.ClusterId;
            o.ServiceId = cluster.ServiceId;
        });
        silo.ConfigureEndpoints(IPAddress.Parse(cluster.AdvertisedAddress), cluster.SiloPort, cluster.GatewayPort);
        silo.UseAdoNetClustering(o =>
        {
            o.Invariant = NpgsqlInvariant;
            o.ConnectionString = cluster.PostgresConnectionString;
        });
        AddPostgresStores(silo, cluster.PostgresConnectionString);
        silo.AddOrleansStorageHost(o => storageSection.Bind(o));
        silo.Services.AddOptions<ManagementOptions>().Bind(configuration.GetSection(ManagementOptions.SectionName));
        silo.Services.AddOptions<LeaseOptions>().Bind(configuration.GetSection(LeaseOptions.SectionName));
        // Orleans' failure detector: how fast a dead host is noticed, which is how long I/O to its
        // placement groups stalls before the map moves on without it.
        silo.Services.AddOptions<ClusterMembershipOptions>().Bind(configuration.GetSection(MembershipSectionName));
    }

    /// <summary>
    /// The cluster identity, the cluster map and the stream pub-sub state, all in PostgreSQL. State
    /// is stored with the Orleans binary serializer, so what is on disk follows the wire types'
    /// [Alias] and [Id]s (renaming a CLR type never breaks stored state, unlike the JSON default's
    /// type names). <paramref name="clusterStoreName"/> lets a test put its own storage in front
    /// of the map's (the management service always reads <see cref="StorageNames.ClusterStore"/>).
    /// </summary>
    public static void AddPostgresStores(ISiloBuilder silo, string connectionString, string clusterStoreName = StorageNames.ClusterStore)
    {
        // A database error that Orleans' own code lets through to a caller (the stream pub-sub
        // store, right after PostgreSQL restarted) must reach it as an error it can read and
        // retry, not as a failure to serialize the driver's exception: the caller gets its type
        // name and message (UnavailableExceptionFallbackException where Npgsql is not loaded).
        silo.Services.Configure<ExceptionSerializationOptions>(o => o.SupportedNamespacePrefixes.Add("Npgsql"));
        silo.Services.AddSingleton<IClusterIdentityStore>(sp =>
            new PostgresClusterIdentityStore(connectionString, sp.GetRequiredService<IOptions<ClusterOptions>>()));
        foreach (var name in new[] { clusterStoreName, StorageNames.PubSubStore })
        {
            silo.AddAdoNetGrainStorage(name, (OptionsBuilder<AdoNetGrainStorageOptions> options) => options.Configure<Serializer>((o, serializer) =>
            {
                o.Invariant = NpgsqlInvariant;
                o.ConnectionString = connectionString;
                o.GrainStorageSerializer = new OrleansGrainStorageSerializer(serializer);
            }));
        }
    }

    private static List<string> Validate(ClusterHostOptions cluster, StorageServerOptions storage)
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(storage.HostId))
        {
            problems.Add("Storage:HostId (--host-id) is required");
        }
        if (string.IsNullOrWhiteSpace(storage.DataDirectory))
        {
            problems.Add("Storage:DataDirectory (--data) is required");
        }
        if (string.IsNullOrWhiteSpace(cluster.PostgresConnectionString))
        {
            problems.Add("Cluster:PostgresConnectionString (--postgres) is required");
        }
        if (!IPAddress.TryParse(cluster.AdvertisedAddress, out _))
        {
            problems.Add($"Cluster:AdvertisedAddress '{cluster.AdvertisedAddress}' is not an IP address");
        }
        else if (cluster.PkiDirectory.Length == 0 && !IPAddress.IsLoopback(IPAddress.Parse(cluster.AdvertisedAddress)))
        {
            problems.Add($"Cluster:AdvertisedAddress {cluster.AdvertisedAddress} is not a loopback address, and without TLS (--pki) every volume would be open to that network: give the cluster's certificates with --pki");
        }
        if (cluster.SiloPort is < 1 or > 65535 || cluster.GatewayPort is < 1 or > 65535 || cluster.SiloPort == cluster.GatewayPort)
        {
            problems.Add($"ports must be distinct and in 1-65535 (silo {cluster.SiloPort}, gateway {cluster.GatewayPort})");
        }
        if (storage.DataPort is < 0 or > 65535 || (storage.DataPort > 0 && (storage.DataPort == cluster.SiloPort || storage.DataPort == cluster.GatewayPort)))
        {
            problems.Add($"Storage:DataPort (--data-port) {storage.DataPort} must be 0 (any free port) or a port in 1-65535 other than the silo and gateway ports");
        }
        return problems;
    }
}
