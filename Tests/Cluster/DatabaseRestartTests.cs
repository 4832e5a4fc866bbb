using Npgsql;
using Orleans.Streams;
using OrleansStorage.Client.Library;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// PostgreSQL restarted under a running cluster kills every pooled connection (57P01,
/// "terminating connection due to administrator command"); the next statement on one fails. The
/// stream pub-sub state lives there, so a client connecting right then met that failure, and
/// with it a driver exception the silo could not even send (infra/chaos, seed 1: a
/// CodecNotFoundException for Npgsql.PostgresException, and no client could connect).
/// </summary>
public sealed class DatabaseRestartTests(StorageClusterFixture fixture, ITestOutputHelper output) : IClassFixture<StorageClusterFixture>
{
    [SkippableFact]
    public async Task A_client_connects_right_after_the_database_killed_every_connection()
    {
        fixture.SkipIfUnavailable();
        // Every silo has used its pooled connections (the map and the pub-sub state are stored).
        await using (var first = await OstorClient.AttachAsync(fixture.Cluster.Client))
        {
            await first.GetMapAsync();
        }

        var killed = await TerminateEveryOtherConnectionAsync(fixture.ConnectionString);
        output.WriteLine($"{killed} connections to the cluster's database terminated");
        Assert.True(killed > 0, "no connection of the cluster was open: the test proved nothing");

        // A new client subscribes to map pushes: the pub-sub state is read and written on a pooled connection.
        await using var client = await OstorClient.AttachAsync(fixture.Cluster.Client);
        var map = await client.GetMapAsync();
        Assert.True(map.Epoch > 0);
    }

    [SkippableFact]
    public async Task The_database_error_reaches_the_caller_as_an_error_it_can_read()
    {
        fixture.SkipIfUnavailable();
        var stream = fixture.Cluster.Client.GetStreamProvider(Maps.ClusterMapStream.ProviderName)
            .GetStream<Maps.ClusterMap>(Orleans.Runtime.StreamId.Create(Maps.ClusterMapStream.Namespace, Maps.ClusterMapStream.Key));
        var warmUp = await stream.SubscribeAsync((_, _) => Task.CompletedTask);
        await warmUp.UnsubscribeAsync();

        // The next statement on a killed pooled connection fails; which connection the pub-sub
        // store takes is the pool's choice, so the cut is made again until one is met.
        Exception? error = null;
        for (var attempt = 0; attempt < 10 && error is null; attempt++)
        {
            Assert.True(await TerminateEveryOtherConnectionAsync(fixture.ConnectionString) > 0, "no connection of the cluster was open: the test proved nothing");
            try
            {
                var handle = await stream.SubscribeAsync((_, _) => Task.CompletedTask);
                await handle.UnsubscribeAsync();
            }
            catch (Exception ex)
            {
                error = ex;
            }
        }
        Assert.True(error is not null, "ten subscriptions right after every connection was killed all succeeded: the test proved nothing");
        output.WriteLine($"{error.GetType().Name}: {error.Message}");
        Assert.IsNotType<Orleans.Serialization.CodecNotFoundException>(error);
        Assert.True(error.Message.Contains("57P01", StringComparison.Ordinal) || error.ToString().Contains("Npgsql", StringComparison.Ordinal),
            $"the error does not say what the database did: {error}");
    }

    /// <summary>What a restart of PostgreSQL does to the connections of one database, without disturbing other tests' databases.</summary>
    private static async Task<int> TerminateEveryOtherConnectionAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        await connection.OpenAsync();
        await using var terminate = new NpgsqlCommand(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()) AS killed",
            connection);
        return Convert.ToInt32(await terminate.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
