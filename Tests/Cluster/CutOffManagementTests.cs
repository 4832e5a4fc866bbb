using OrleansStorage.Errors;
using OrleansStorage.Leases;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A management activation that cannot reach the database stops answering for the map: it could
/// have been replaced by another activation that can (issue 28, hole 7; docs/epoch-protocol.md).
/// </summary>
public sealed class CutOffManagementTests(SwitchableDatabaseFixture fixture, ITestOutputHelper output) : IClassFixture<SwitchableDatabaseFixture>
{
    [SkippableFact]
    public async Task Management_cut_off_from_the_database_refuses_maps_and_leases_and_answers_again_once_it_is_back()
    {
        fixture.SkipIfUnavailable();
        var before = await fixture.Management.GetMapAsync();
        var host = before.Hosts[0].HostId;

        fixture.Database.CutOff();
        ManagementUnavailableException refused;
        try
        {
            // Four limits: the last proof ages past the limit, and the timer that would renew it gets no answer.
            refused = await RefusedWithinAsync(() => fixture.Management.GetMapAsync(), 4 * SwitchableDatabaseFixture.ConfirmationLimit, "the map");
            output.WriteLine(refused.Message);
            Assert.Contains("has not reached the database", refused.Message, StringComparison.Ordinal);
            await Assert.ThrowsAsync<ManagementUnavailableException>(() => fixture.Management.RenewLeaseAsync(new LeaseRequest(host, before.Epoch)));
            await Assert.ThrowsAsync<ManagementUnavailableException>(() => fixture.Management.CreateVolumeAsync("cutoff-" + Guid.NewGuid().ToString("N")[..8], 4096, 1));
            Assert.True(fixture.Database.Held > 0, "nothing asked the database while it was cut off");

            // Status still answers, and says why nothing else does (issue 29, item 4).
            var status = await fixture.Client.GetStatusAsync();
            output.WriteLine(status.Management.DatabaseProblem);
            Assert.Contains("the database has not answered for", status.Management.DatabaseProblem, StringComparison.Ordinal);
            Assert.True(status.Management.DatabaseLastReached <= DateTimeOffset.UtcNow - SwitchableDatabaseFixture.ConfirmationLimit, $"last reached {status.Management.DatabaseLastReached:O}");
            Assert.True(status.Map.Epoch >= before.Epoch);
            Assert.Contains("DATABASE UNREACHABLE", Client.Cli.ClusterStatusView.Render(status, DateTimeOffset.UtcNow), StringComparison.Ordinal);
        }
        finally
        {
            fixture.Database.Heal();
        }

        ClusterMap? after = null;
        await new Eventually(output).UntilAsync(async () => (after = await fixture.Management.GetMapAsync()) is not null, "the map answered again", TimeSpan.FromSeconds(30));
        Assert.True(after!.Epoch >= before.Epoch, $"the map went back from epoch {before.Epoch} to {after.Epoch}");
        await new Eventually(output).UntilAsync(async () => (await fixture.Management.GetStatusAsync()).DatabaseProblem is null, "status no longer reports the database unreachable", TimeSpan.FromSeconds(30));
    }

    /// <summary>Calls <paramref name="call"/> until it is refused as unavailable; fails the test if it still answers after <paramref name="limit"/> (plus slack for a loaded machine).</summary>
    private static async Task<ManagementUnavailableException> RefusedWithinAsync<T>(Func<Task<T>> call, TimeSpan limit, string what)
    {
        var started = DateTime.UtcNow;
        var deadline = started + limit + TimeSpan.FromSeconds(10);
        T answer;
        while (true)
        {
            try
            {
                answer = await call();
            }
            catch (ManagementUnavailableException ex)
            {
                return ex;
            }
            if (DateTime.UtcNow >= deadline)
            {
                break;
            }
            await Task.Delay(100);
        }
        Assert.Fail($"the management service still answered for {what} ({Describe(answer)}) {(DateTime.UtcNow - started).TotalSeconds:0.0} s after it was cut off from the database");
        return null!;
    }

    private static string Describe(object? answer) => answer is ClusterMap map ? $"the map at epoch {map.Epoch}" : answer?.ToString() ?? "null";
}
