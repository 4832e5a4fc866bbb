using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.Faults;
using OrleansStorage.Chaos.History;
using OrleansStorage.Chaos.Workload;
using OrleansStorage.Client.Library;
using OrleansStorage.Maps;

namespace OrleansStorage.Chaos;

/// <summary>The end of a run, with every fault healed: the cluster healthy again, every block read by a fresh client, every replica compared.</summary>
public sealed partial class ChaosRun
{
    private static readonly TimeSpan HealthyWithin = TimeSpan.FromMinutes(3);
    private static readonly TimeSpan HealthyBetweenFaultsWithin = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Every host Up and no placement group degraded, moving or unavailable; an anomaly if that does
    /// not come within <see cref="HealthyWithin"/> after healing. Between faults, only a line.
    /// </summary>
    /// <param name="cluster">When given, a host whose process is gone meanwhile is started again (one that a partition made stop itself after its heal's restart had found it still running).</param>
    private async Task WaitUntilHealthyAsync(OstorClient admin, bool betweenFaults = false, LocalCluster? cluster = null)
    {
        var started = _history.Now;
        var last = "no answer";
        var within = betweenFaults ? HealthyBetweenFaultsWithin : HealthyWithin;
        if (betweenFaults)
        {
            // A host restarted after a power cut reports its suspect segments as it activates,
            // which may be just after it shows Up: give the reports time to land in the map.
            await Task.Delay(TimeSpan.FromSeconds(2));
        }
        while (_history.Now - started < within)
        {
            try
            {
                if (cluster is not null && Enumerable.Range(1, cluster.Hosts).Any(h => cluster.PidOf(h) is not { } pid || !LocalCluster.IsAlive(pid)))
                {
                    output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s a host process is gone: starting it again");
                    await cluster.StartMissingHostsAsync();
                }
                var status = await admin.GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(20));
                var notUp = status.Map.Hosts.Where(h => h.State != HostState.Up).Select(h => $"{h.HostId} {h.State}").ToList();
                last = $"epoch {status.Map.Epoch}: {status.DegradedGroups} degraded, {status.RecoveringGroups} recovering, {status.UnavailableGroups} unavailable groups"
                    + (notUp.Count > 0 ? "; " + string.Join(", ", notUp) : "");
                if (notUp.Count == 0 && status.DegradedGroups == 0 && status.RecoveringGroups == 0 && status.UnavailableGroups == 0)
                {
                    output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s healthy after {(_history.Now - started).TotalSeconds:0} s ({last})");
                    return;
                }
            }
            catch (Exception ex)
            {
                last = $"{ex.GetType().Name}: {ex.Message.Split('\n')[0]}";
            }
            await Task.Delay(TimeSpan.FromSeconds(2));
        }
        if (betweenFaults)
        {
            output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s not healthy {within.TotalSeconds:0} s after the fault; the next one comes anyway ({last})");
            return;
        }
        _anomalies.Add(Anomaly.NotAboutABlock("not healthy after healing", $"the cluster was not healthy {HealthyWithin.TotalMinutes:0} min after every fault was healed; last status: {last}", _history.Now));
    }

    /// <summary>Every block read once by a client that took no part in the workload; the reads join the history.</summary>
    private async Task FinalReadsAsync(LocalCluster cluster, BlockLayout layout, int runTag)
    {
        await using var connection = await AfterHealingAsync("connecting", () => WorkloadClient.ConnectAsync(cluster.Pki, cluster.Gateways, TimeSpan.FromSeconds(60)));
        var handles = new List<VolumeHandle>();
        foreach (var volume in layout.Volumes)
        {
            handles.Add(await OpenAsync(connection, volume.Name));
        }
        var reader = new WorkloadClient(options.Clients, handles, layout, _history, new Random(0), runTag, TimeSpan.FromSeconds(90));
        await Parallel.ForAsync(0, layout.Blocks, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (block, _) => await reader.ReadAsync(block, final: true));
        output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s every block read after healing");
        var snapshots = _history.Snapshot().Where(o => o.Kind == OperationKind.SnapshotCreate && o.IsOk).ToList();
        foreach (var create in snapshots)
        {
            var snapshot = await OpenAsync(connection, layout.Volumes[create.Volume].Name + VolumeHandle.SnapshotSeparator + create.Snapshot);
            var blocks = Enumerable.Range(0, layout.Blocks).Where(b => layout.VolumeOf(b) == create.Volume);
            await Parallel.ForEachAsync(blocks, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (block, _) => await reader.ReadSnapshotAsync(snapshot, block));
        }
        if (snapshots.Count > 0)
        {
            output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s every block of {snapshots.Count} snapshots read");
        }
    }

    /// <summary>
    /// Opens a volume, trying again for up to a minute: see <see cref="AfterHealingAsync{T}"/>.
    /// </summary>
    private Task<VolumeHandle> OpenAsync(OstorClient connection, string name) =>
        AfterHealingAsync("opening " + name, () => connection.OpenVolumeAsync(name));

    /// <summary>
    /// A control call after healing (connecting, opening a volume), tried again for up to a minute:
    /// the management service may still be settling. Not an anomaly unless it lasts, but each
    /// distinct failure is printed: seen after PostgreSQL restarted, a client's connect and
    /// OpenVolumeAsync failing with CodecNotFoundException for Npgsql.PostgresException (57P01 from
    /// a pooled connection the restart killed, which Orleans cannot carry back to the client).
    /// </summary>
    private async Task<T> AfterHealingAsync<T>(string what, Func<Task<T>> call)
    {
        var started = _history.Now;
        string? last = null;
        while (true)
        {
            try
            {
                return await call();
            }
            catch (Exception ex) when (_history.Now - started < TimeSpan.FromMinutes(1))
            {
                var error = $"{ex.GetType().Name}: {ex.Message.Split('\n')[0]}";
                if (error != last)
                {
                    output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s {what} after healing failed, trying again: {error}");
                    last = error;
                }
                await Task.Delay(TimeSpan.FromSeconds(1));
            }
        }
    }

    /// <summary>Every block of every replica against its checksum and the other replicas: what <c>infra/ostor volume verify</c> (deep) does.</summary>
    private async Task VerifyReplicasAsync(OstorClient admin, IEnumerable<ChaosVolume> volumes)
    {
        foreach (var volume in volumes)
        {
            try
            {
                var handle = await OpenAsync(admin, volume.Name);
                var problems = await handle.VerifyReplicasAsync();
                foreach (var problem in problems)
                {
                    _anomalies.Add(Anomaly.NotAboutABlock("replicas differ", $"volume verify {volume.Name}: {problem}", _history.Now));
                }
                output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s volume verify {volume.Name}: {(problems.Count == 0 ? "every replica of every segment equal and checksum-true" : $"{problems.Count} problems")}");
            }
            catch (Exception ex)
            {
                _anomalies.Add(Anomaly.NotAboutABlock("verify failed", $"volume verify {volume.Name} failed: {ex.GetType().Name}: {ex.Message.Split('\n')[0]}", _history.Now));
            }
        }
    }
}
