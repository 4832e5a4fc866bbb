using OrleansStorage.Errors;
using OrleansStorage.Leases;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A management activation that cannot reach the database stops answering for the map: it could
/// have been replaced by another activation that can (issue 28, hole 7; docs/epoch-protocol.md).
/// Leases go on while a majority of hosts witness it, so block I/O does (issue 29, item 4).
/// </summary>
public sealed class CutOffManagementTests(SwitchableDatabaseFixture fixture, ITestOutputHelper output) : IClassFixture<SwitchableDatabaseFixture>
{
    [SkippableFact]
    public async Task Management_cut_off_from_the_database_refuses_maps_and_changes_keeps_leases_and_answers_again_once_it_is_back()
    {
        fixture.SkipIfUnavailable();
        var name = "cutoff-io-" + Guid.NewGuid().ToString("N")[..8];
        await fixture.Client.CreateVolumeAsync(name, 1 << 20, 2);
        var volume = await fixture.Client.OpenVolumeAsync(name);
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
            await Assert.ThrowsAsync<ManagementUnavailableException>(() => fixture.Management.CreateVolumeAsync("cutoff-" + Guid.NewGuid().ToString("N")[..8], 4096, 1));
            Assert.True(fixture.Database.Held > 0, "nothing asked the database while it was cut off");

            // The hosts renew their leases all the while: well past the three limits after which
            // an activation nobody witnesses steps aside, a client still writes and reads.
            await Task.Delay(4 * SwitchableDatabaseFixture.ConfirmationLimit);
            var data = new byte[4096];
            Random.Shared.NextBytes(data);
            await volume.WriteAsync(0, data);
            var back = new byte[data.Length];
            await volume.ReadAsync(0, back);
            Assert.Equal(data, back);
            var lease = await fixture.Management.RenewLeaseAsync(new LeaseRequest(host, before.Epoch));
            Assert.True(lease.Granted, $"no lease while the hosts witness the activation: {lease.Refusal}");

            // Status still answers, and says why nothing else does (issue 29, item 4).
            var status = await fixture.Client.GetStatusAsync();
            output.WriteLine(status.Management.DatabaseProblem);
            Assert.Contains("the database has not answered for", status.Management.DatabaseProblem, StringComparison.Ordinal);
            Assert.Contains("block I/O goes on", status.Management.DatabaseProblem, StringComparison.Ordinal);
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

    /// <summary>
    /// Cut off from the database alone, while the other silos reach it, the activation must not
    /// hold the map (a dead host unmarked) for the witnessed-grant limit: it asks the hosts, and
    /// steps aside once one of them reads the map, for an activation that can change it.
    /// </summary>
    [SkippableFact]
    public async Task Management_cut_off_from_the_database_alone_steps_aside_for_an_activation_that_reaches_it()
    {
        fixture.SkipIfUnavailable();
        var (managementHost, _) = await fixture.HostsByManagementAsync();
        fixture.Database.CutOff(onlyHost: managementHost);
        try
        {
            ManagementStatus? moved = null;
            ManagementStatus? last = null;
            await new Eventually(output).UntilAsync(async () =>
            {
                last = await fixture.Management.GetStatusAsync();
                moved = last.HostId != managementHost && last.DatabaseProblem is null ? last : null;
                return moved is not null;
            }, $"the management service moved from {managementHost}, cut off from the database, to a host that reaches it", TimeSpan.FromSeconds(60),
            () => last is null ? "no status" : $"on {last.HostId}, activated {last.ActivatedAt:HH:mm:ss.fff}: {last.DatabaseProblem}");
            output.WriteLine($"the management service moved from {managementHost} to {moved!.HostId} (activated {moved.ActivatedAt:HH:mm:ss.fff})");

            // Map changes go through again, while the old host is still cut off.
            var name = "moved-" + Guid.NewGuid().ToString("N")[..8];
            await fixture.Client.CreateVolumeAsync(name, 1 << 20, 2);
            await fixture.Client.DeleteVolumeAsync(name);
        }
        finally
        {
            fixture.Database.Heal();
        }
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
