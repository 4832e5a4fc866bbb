using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.Faults;
using OrleansStorage.Chaos.History;
using OrleansStorage.Chaos.Workload;
using OrleansStorage.Client.Library;
using OrleansStorage.Management;

namespace OrleansStorage.Chaos;

/// <summary>
/// One run: volumes created on the cluster <c>infra/chaos</c> brought up, the workload's clients
/// and the seeded faults let loose together for the run's length, then every fault healed, every
/// block read once more, every replica compared, and the history checked. Everything random comes
/// from one <see cref="Random"/>(seed): the fault plan, the run's value tag and each client's own
/// generator are drawn from it in a fixed order before anything starts.
/// </summary>
public sealed partial class ChaosRun(ChaosOptions options, TextWriter output)
{
    private const long VolumeSizeBytes = 128L << 20;
    private static readonly TimeSpan OperationTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ClientRetryTimeout = TimeSpan.FromSeconds(20);

    // Each snapshot costs a copy of every segment written after it: a handful per run is plenty.
    private const int MaxSnapshots = 6;

    // The run's clock starts with the workload (faults are planned from then), not with the set-up.
    private HistoryRecorder _history = new(TimeProvider.System);
    private readonly FaultLog _faults = new();
    private readonly List<Anomaly> _anomalies = [];

    public async Task<int> RunAsync()
    {
        try
        {
            return await RunCheckedAsync();
        }
        catch (Exception ex)
        {
            output.WriteLine($"chaos: seed {options.Seed}, the run could not be carried out: {ex.GetType().Name}: {ex.Message.Split('\n')[0]}");
            return 2;
        }
    }

    private async Task<int> RunCheckedAsync()
    {
        var master = new Random(options.Seed);
        var plan = FaultSchedule.Plan(new Random(master.Next()), options.RunLength, options.Hosts, options.Netns, options.FaultKinds);
        var runTag = master.Next();
        var clientRandoms = Enumerable.Range(0, options.Clients).Select(_ => new Random(master.Next())).ToList();
        var snapshotRandom = new Random(master.Next());
        output.WriteLine($"chaos: seed {options.Seed}, {options.RunLength.TotalSeconds:0} s, {options.Hosts} hosts{(options.Netns ? " in network namespaces" : "")}, {options.Clients} clients; planned faults:");
        foreach (var planned in plan)
        {
            output.WriteLine("  " + planned);
        }

        var cluster = new LocalCluster(options.Root, options.Data, options.Hosts, options.Netns);
        await using var admin = await WorkloadClient.ConnectAsync(cluster.Pki, cluster.Gateways, TimeSpan.FromSeconds(60));
        var volumes = new List<ChaosVolume> { new("chaos-r2", 2) };
        if (options.Hosts >= 3)
        {
            volumes.Add(new("chaos-r3", 3));
        }
        long segmentSize = 0;
        foreach (var volume in volumes)
        {
            segmentSize = (await admin.CreateVolumeAsync(volume.Name, VolumeSizeBytes, volume.ReplicationFactor)).SegmentSizeBytes;
        }
        var layout = new BlockLayout(volumes, segmentSize, VolumeSizeBytes);
        output.WriteLine($"{layout.Blocks} blocks in {string.Join(", ", volumes.Select(v => $"{v.Name} (factor {v.ReplicationFactor})"))}");

        var connections = new List<OstorClient>();
        IReadOnlyList<PowerCut> clusterPowerCuts = [];
        try
        {
            var handlesOfClients = new List<List<VolumeHandle>>();
            for (var i = 0; i < options.Clients; i++)
            {
                var connection = await WorkloadClient.ConnectAsync(cluster.Pki, cluster.Gateways, ClientRetryTimeout);
                connections.Add(connection);
                var handles = new List<VolumeHandle>();
                foreach (var volume in volumes)
                {
                    handles.Add(await connection.OpenVolumeAsync(volume.Name));
                }
                handlesOfClients.Add(handles);
            }

            _history = new HistoryRecorder(TimeProvider.System);
            var clients = handlesOfClients.Select((handles, i) => new WorkloadClient(i, handles, layout, _history, clientRandoms[i], runTag, OperationTimeout)).ToList();
            var watch = new HostWatch(cluster, _history);
            var injector = new FaultInjector(cluster, _faults, watch, _history, () => ManagementHostAsync(admin), () => WaitUntilHealthyAsync(admin, betweenFaults: true, cluster), output);
            clusterPowerCuts = injector.ClusterPowerCuts;
            using var stopWatching = new CancellationTokenSource();
            var watching = watch.RunAsync(stopWatching.Token);
            output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s workload and faults start");
            using (var stopWorkload = new CancellationTokenSource(options.RunLength))
            {
                var snapshots = new SnapshotTaker(options.Clients + 1, admin, layout, _history, snapshotRandom, MaxSnapshots);
                var workload = Task.WhenAll(clients.Select(c => Task.Run(() => c.RunAsync(stopWorkload.Token))).Append(snapshots.RunAsync(stopWorkload.Token)));
                await injector.RunAsync(plan, options.RunLength, stopWorkload.Token);
                await workload;
            }
            output.WriteLine($"{_history.Now.TotalSeconds,8:0.000} s workload stopped after {_history.Count} operations; healing");
            await injector.HealAllAsync();
            await WaitUntilHealthyAsync(admin);
            try
            {
                await FinalReadsAsync(cluster, layout, runTag);
            }
            catch (Exception ex)
            {
                // The history up to here is still checked: the blocks not read are reported as such.
                _anomalies.Add(Anomaly.NotAboutABlock("final reads failed", $"{ex.GetType().Name}: {ex.Message.Split('\n')[0]}", _history.Now));
            }
            await VerifyReplicasAsync(admin, volumes);
            await stopWatching.CancelAsync();
            await watching;

            _anomalies.AddRange(injector.Anomalies);
            _anomalies.AddRange(watch.UnbiddenDeaths);
            foreach (var excused in watch.ExcusedDeaths)
            {
                output.WriteLine("allowed: " + excused);
            }
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }

        var history = _history.Snapshot();
        var cuts = clusterPowerCuts;
        _anomalies.AddRange(RegisterChecker.Check(history, cuts));
        _anomalies.AddRange(DurabilityChecker.Check(history, Enumerable.Range(0, layout.Blocks), cuts));
        _anomalies.AddRange(SnapshotChecker.Check(history, layout.VolumeOf, cuts));
        new ChaosReport(output, history, _faults, layout).Print(options.Seed, _anomalies);
        return _anomalies.Count == 0 ? 0 : 1;
    }

    /// <summary>The host whose silo runs the management service, or null when it does not answer now.</summary>
    private static async Task<int?> ManagementHostAsync(OstorClient admin)
    {
        try
        {
            var status = await admin.Cluster.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey).GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(5));
            return status.HostId.StartsWith("host-", StringComparison.Ordinal) && int.TryParse(status.HostId.AsSpan(5), out var host) ? host : null;
        }
        catch (Exception)
        {
            return null;
        }
    }
}
