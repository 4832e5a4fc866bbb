using OrleansStorage.Maps;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>Waiting for a cluster to reach a state, with what it looked like when it did not.</summary>
public sealed class Eventually(ITestOutputHelper output)
{
    /// <summary>Polls <paramref name="condition"/> until it holds, tolerating errors meanwhile (a management failover); fails the test after the timeout.</summary>
    public async Task UntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null, Func<string>? describe = null)
    {
        var started = DateTime.UtcNow;
        var deadline = started + (timeout ?? TimeSpan.FromSeconds(60));
        Exception? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                if (await condition())
                {
                    output.WriteLine($"{what}: after {(DateTime.UtcNow - started).TotalSeconds:0.0} s");
                    return;
                }
            }
            catch (Exception ex)
            {
                last = ex;
            }
            await Task.Delay(250);
        }
        Assert.Fail($"timed out waiting for {what}" + (last is null ? "" : $" (last error: {last.Message})") + (describe is null ? "" : $"; {describe()}"));
    }

    /// <summary>Polls the map until <paramref name="condition"/> holds for it, and returns that map.</summary>
    public async Task<ClusterMap> MapAsync(Func<Task<ClusterMap>> getMap, Func<ClusterMap, bool> condition, string what, TimeSpan? timeout = null)
    {
        ClusterMap? map = null;
        await UntilAsync(async () => condition(map = await getMap()), what, timeout, () => Describe(map));
        return map!;
    }

    /// <summary>No host Down (Out is fine once its groups live elsewhere) and every group at full factor.</summary>
    public static bool Healthy(ClusterMap map) =>
        map.Hosts.All(h => h.State is HostState.Up or HostState.Out) && GroupsFull(map);

    /// <summary>Every group at its factor, nothing pending or leaving.</summary>
    public static bool GroupsFull(ClusterMap map) =>
        map.AllGroups().All(x => x.Group.Replicas.Length == x.Volume.ReplicationFactor && !x.Group.IsMoving);

    /// <summary>The map's hosts and every group not at full factor, for a failure message.</summary>
    public static string Describe(ClusterMap? map) =>
        map is null ? "no map" :
        $"epoch {map.Epoch}; hosts {string.Join(", ", map.Hosts.Select(h => $"{h.HostId}={h.State}"))}; groups not full: " +
        string.Join("; ", map.AllGroups()
            .Where(x => x.Group.Replicas.Length != x.Volume.ReplicationFactor || x.Group.IsMoving)
            .Take(8)
            .Select(x => $"{x.Volume.Name}/{x.Group.Index}: {x.Group.Describe()}"));

    /// <summary>Calls <paramref name="call"/> until the management service stops answering "unavailable" (it reloads after a failed write), for up to 30 s.</summary>
    public static async Task<T> RetryAsync<T>(Func<Task<T>> call)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                return await call();
            }
            catch (Errors.ManagementUnavailableException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
        }
    }
}
