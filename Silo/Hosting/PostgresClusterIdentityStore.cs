using Microsoft.Extensions.Options;
using Npgsql;
using Orleans.Configuration;
using OrleansStorage.Identity;

namespace OrleansStorage.Silo.Hosting;

/// <summary>
/// The cluster identity in PostgreSQL (table <c>ostor_cluster_identity</c> of
/// infra/sql/orleans-schema.sql), one row per Orleans ServiceId. Every failure is one line naming
/// what went wrong, never a driver exception: a silo prints it and exits.
/// </summary>
internal sealed class PostgresClusterIdentityStore(string connectionString, IOptions<ClusterOptions> cluster) : IClusterIdentityStore
{
    /// <summary>A start-up check must answer quickly when PostgreSQL is unreachable.</summary>
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The grain type under which the management service stores the map (its [GrainType]).</summary>
    private const string ManagementGrainType = "ostor-management";

    private string ServiceId => cluster.Value.ServiceId;

    public Task<ClusterIdentity?> ReadAsync(CancellationToken cancellationToken = default) =>
        RunAsync(async connection =>
        {
            await using var query = new NpgsqlCommand(
                "SELECT cluster_id, orleans_cluster_id, created_at FROM ostor_cluster_identity WHERE service_id = @service", connection);
            query.Parameters.AddWithValue("service", ServiceId);
            await using var row = await query.ExecuteReaderAsync(cancellationToken);
            return await row.ReadAsync(cancellationToken)
                ? new ClusterIdentity(row.GetGuid(0), row.GetString(1), row.GetFieldValue<DateTimeOffset>(2))
                : null;
        }, cancellationToken);

    public async Task<ClusterIdentity> CreateAsync(ClusterIdentity proposed, CancellationToken cancellationToken = default)
    {
        await RunAsync(async connection =>
        {
            await using var insert = new NpgsqlCommand(
                """
                INSERT INTO ostor_cluster_identity (service_id, cluster_id, orleans_cluster_id, created_at)
                VALUES (@service, @cluster, @deployment, @created)
                ON CONFLICT (service_id) DO NOTHING
                """, connection);
            insert.Parameters.AddWithValue("service", ServiceId);
            insert.Parameters.AddWithValue("cluster", proposed.ClusterId);
            insert.Parameters.AddWithValue("deployment", proposed.DeploymentId);
            insert.Parameters.AddWithValue("created", proposed.CreatedAt);
            return await insert.ExecuteNonQueryAsync(cancellationToken);
        }, cancellationToken);
        return await ReadAsync(cancellationToken) ?? throw new InvalidOperationException("the cluster identity was written but cannot be read back");
    }

    public Task<bool> HoldsMapWithoutIdentityAsync(CancellationToken cancellationToken = default) =>
        RunAsync(async connection =>
        {
            await using var query = new NpgsqlCommand(
                "SELECT EXISTS (SELECT 1 FROM ostor_grain_state WHERE service_id = @service AND grain_type LIKE @type AND payload IS NOT NULL)", connection);
            query.Parameters.AddWithValue("service", ServiceId);
            query.Parameters.AddWithValue("type", "%" + ManagementGrainType + "%");
            return (bool)(await query.ExecuteScalarAsync(cancellationToken))!;
        }, cancellationToken);

    private async Task<T> RunAsync<T>(Func<NpgsqlConnection, Task<T>> work, CancellationToken cancellationToken)
    {
        NpgsqlConnectionStringBuilder settings;
        try
        {
            settings = new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (ArgumentException ex)
        {
            throw new HostStartupException($"the PostgreSQL connection string (--postgres) is not valid: {ex.Message}");
        }
        if (settings.Timeout <= 0 || settings.Timeout > ConnectTimeout.TotalSeconds)
        {
            settings.Timeout = (int)ConnectTimeout.TotalSeconds;
        }
        var where = $"{settings.Host}:{settings.Port}/{settings.Database}";
        try
        {
            await using var connection = new NpgsqlConnection(settings.ConnectionString);
            await connection.OpenAsync(cancellationToken);
            return await work(connection);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            throw new HostStartupException($"PostgreSQL at {where} has no OrleansStorage schema (apply infra/sql/orleans-schema.sql to it): {ex.MessageText}");
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            throw new HostStartupException($"PostgreSQL at {where} did not answer: {ex.Message}");
        }
    }
}
