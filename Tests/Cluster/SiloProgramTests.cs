using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;
using Orleans.Storage;
using OrleansStorage.Management;
using OrleansStorage.Silo.Hosting;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Silos built by the real silo configuration (what ostor-silo runs): ADO.NET clustering and grain
/// storage on PostgreSQL with the project's own schema. Proves the schema against the real providers.
/// </summary>
public sealed class SiloProgramTests : IAsyncLifetime
{
    private readonly string _clusterId = "silo-test-" + Guid.NewGuid().ToString("N")[..8];
    private string _connectionString = "";
    private ConfiguredSilos? _silos;

    public async Task InitializeAsync()
    {
        var postgres = await PrivatePostgres.GetAsync();
        if (postgres is not null)
        {
            _connectionString = await postgres.CreateDatabaseAsync("ostor_silo");
            _silos = new ConfiguredSilos(_connectionString, _clusterId);
        }
    }

    public async Task DisposeAsync()
    {
        if (_silos is not null)
        {
            await _silos.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task Two_silos_from_the_silo_configuration_form_one_cluster_through_postgres()
    {
        Prerequisites.Require(_connectionString.Length > 0, "PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        await _silos!.StartAsync("host-a");
        await _silos.StartAsync("host-b");

        // Both silos are Active (status 3) rows in our membership table.
        await using (var connection = new NpgsqlConnection(_connectionString))
        {
            await connection.OpenAsync();
            await using var query = new NpgsqlCommand("SELECT count(*) FROM ostor_membership WHERE deployment_id = @id AND status = 3", connection);
            query.Parameters.AddWithValue("id", _clusterId);
            Assert.Equal(2L, (long)(await query.ExecuteScalarAsync())!);
        }

        // A client through one gateway sees both hosts register and a volume spanning both.
        await using var client = await _silos.ConnectAsync();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetMapAsync()).Hosts.Length < 2)
        {
            Assert.True(DateTime.UtcNow < deadline, "the two hosts did not both register");
            await Task.Delay(200);
        }
        await client.CreateVolumeAsync("spread", 8L << 20, 2);
        var volume = await client.OpenVolumeAsync("spread");
        var data = Replicas.RandomBytes(8 << 20, seed: 17);
        await volume.WriteAsync(0, data);
        var back = new byte[data.Length];
        await volume.ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back));
        Assert.Equal(2, (await client.GetHostsAsync()).Count(h => h.Server is { BytesUsed: > 0 }));
    }

    [SkippableFact]
    public async Task Grain_storage_on_our_schema_enforces_optimistic_concurrency()
    {
        Prerequisites.Require(_connectionString.Length > 0, "PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        var silo = await _silos!.StartAsync("host-s");
        var storage = silo.Services.GetRequiredKeyedService<IGrainStorage>(StorageNames.ClusterStore);
        var grainId = GrainId.Create("schema-test", Guid.NewGuid().ToString("N"));

        var first = new GrainState<ManagementState>(new ManagementState());
        await storage.ReadStateAsync("schema-test", grainId, first);
        Assert.False(first.RecordExists);
        await storage.WriteStateAsync("schema-test", grainId, first);
        Assert.Equal("1", first.ETag);

        // A second writer that never read the state cannot insert over it.
        var blind = new GrainState<ManagementState>(new ManagementState());
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync("schema-test", grainId, blind));

        // A writer holding an old version cannot overwrite a newer one.
        var reader = new GrainState<ManagementState>(new ManagementState());
        await storage.ReadStateAsync("schema-test", grainId, reader);
        Assert.Equal("1", reader.ETag);
        first.State!.Map = first.State.Map with { Epoch = 41 };
        await storage.WriteStateAsync("schema-test", grainId, first);
        Assert.Equal("2", first.ETag);
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync("schema-test", grainId, reader));

        var check = new GrainState<ManagementState>(new ManagementState());
        await storage.ReadStateAsync("schema-test", grainId, check);
        Assert.Equal(41, check.State!.Map.Epoch);
        Assert.Equal("2", check.ETag);

        await storage.ClearStateAsync("schema-test", grainId, check);
        var cleared = new GrainState<ManagementState>(new ManagementState());
        await storage.ReadStateAsync("schema-test", grainId, cleared);
        Assert.Equal(0, cleared.State!.Map.Epoch);
    }

    [SkippableFact]
    public async Task Schema_script_can_be_applied_again_without_harm()
    {
        Prerequisites.Require(_connectionString.Length > 0, "PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        await PrivatePostgres.ApplySchemaAsync(_connectionString);
        await PrivatePostgres.ApplySchemaAsync(_connectionString);
        await using var connection = new NpgsqlConnection(_connectionString);
        await connection.OpenAsync();
        await using var query = new NpgsqlCommand("SELECT count(*) FROM OrleansQuery", connection);
        Assert.Equal(14L, (long)(await query.ExecuteScalarAsync())!); // 10 clustering + 4 grain storage queries
    }

    [Theory]
    [InlineData("Storage:HostId", "", "Storage:HostId (--host-id) is required")]
    [InlineData("Cluster:AdvertisedAddress", "not-an-ip", "is not an IP address")]
    [InlineData("Cluster:GatewayPort", "11111", "ports must be distinct")]
    [InlineData("Cluster:PostgresConnectionString", "", "PostgresConnectionString (--postgres) is required")]
    public void Bad_silo_configuration_is_a_clear_error(string key, string value, string expected)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Storage:HostId"] = "host-x",
            ["Storage:DataDirectory"] = Path.Combine(Path.GetTempPath(), "ostor-never-created"),
            ["Cluster:SiloPort"] = "11111",
            ["Cluster:GatewayPort"] = "30000",
            ["Cluster:PostgresConnectionString"] = "Host=127.0.0.1",
            [key] = value,
        };
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        var error = Assert.Throws<InvalidOperationException>(() =>
            builder.UseOrleans(silo => SiloConfiguration.ConfigureSilo(silo, builder.Configuration)));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }
}
