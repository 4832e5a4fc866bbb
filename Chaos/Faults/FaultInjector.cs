using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Faults;

/// <summary>
/// Carries out the planned faults, one at a time, each healed before the next: kill -9 of a host
/// (or of the one running the management service) and its restart, PostgreSQL stopped and
/// started, a host partitioned and healed. Each is recorded in the <see cref="FaultLog"/> with the
/// moments it began and was healed. What fails while healing is an anomaly (a host that does not
/// come back), never hidden.
/// </summary>
/// <param name="settle">Waits, within bounds, for the cluster to be whole again after a fault: two faults that each cost one copy must not overlap.</param>
public sealed class FaultInjector(LocalCluster cluster, FaultLog log, HostWatch watch, HistoryRecorder clock, Func<Task<int?>> managementHost, Func<Task> settle, TextWriter output)
{
    private readonly List<Anomaly> _anomalies = [];
    private readonly List<PowerCut> _clusterPowerCuts = [];

    public IReadOnlyList<Anomaly> Anomalies => _anomalies;

    /// <summary>The power cuts of every host, in order, with the instants the checkers cut the history at.</summary>
    public IReadOnlyList<PowerCut> ClusterPowerCuts => _clusterPowerCuts;

    /// <summary>Runs the plan until <paramref name="runLength"/> (no fault begins after it); the last fault is healed before this returns.</summary>
    public async Task RunAsync(IReadOnlyList<PlannedFault> plan, TimeSpan runLength, CancellationToken stop)
    {
        var earliest = TimeSpan.Zero;
        foreach (var planned in plan)
        {
            var at = planned.At > earliest ? planned.At : earliest;
            if (at >= runLength - TimeSpan.FromSeconds(3) || stop.IsCancellationRequested)
            {
                return;
            }
            if (at > clock.Now)
            {
                try
                {
                    await Task.Delay(at - clock.Now, stop);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
            await InjectAsync(planned);
            // A replica rolled back by a power cut, or refilled after a disk fault, is whole again
            // only once resynced: a fault on its peer before then is a second fault, which may
            // lose what only the two of them held.
            await settle();
            // The same quiet gap as planned after a fault that took longer than planned.
            earliest = clock.Now + TimeSpan.FromSeconds(2);
        }
    }

    private async Task InjectAsync(PlannedFault planned)
    {
        switch (planned.Kind)
        {
            case FaultKind.KillHost:
                await KillAndRestartAsync(planned, planned.Host, "");
                break;
            case FaultKind.KillManagement:
                var host = await managementHost();
                await KillAndRestartAsync(planned, host ?? planned.Host, host is null ? " (management host unknown: the planned one)" : " (runs the management service)");
                break;
            case FaultKind.StopDatabase:
                await StopDatabaseAsync(planned);
                break;
            case FaultKind.Partition:
                await PartitionAsync(planned);
                break;
            case FaultKind.ReadOnlyDisk:
                await ReadOnlyDiskAsync(planned);
                break;
            case FaultKind.PowerCut:
                await PowerCutAsync(planned, [planned.Host]);
                break;
            case FaultKind.ClusterPowerCut:
                await PowerCutAsync(planned, [.. Enumerable.Range(1, cluster.Hosts)]);
                break;
            case FaultKind.FailingFsync:
                await FailingFsyncAsync(planned);
                break;
        }
    }

    private async Task KillAndRestartAsync(PlannedFault planned, int host, string note)
    {
        if (cluster.PidOf(host) is not { } pid || !LocalCluster.IsAlive(pid))
        {
            output.WriteLine($"{Stamp()} skipped {planned.Kind} of host-{host}: it does not run");
            return;
        }
        var what = $"kill -9 host-{host} (pid {pid}){note}, restart after {planned.Duration.TotalSeconds:0.0} s";
        watch.Expect(pid, "kill -9 of host-" + host);
        var fault = log.Begin(planned.Kind, host, clock.Now, what);
        await LocalCluster.KillNineAsync(pid);
        output.WriteLine($"{Stamp()} {fault}");
        await Task.Delay(planned.Duration);
        await HealAsync(fault, "restart", cluster.StartMissingHostsAsync);
    }

    private async Task StopDatabaseAsync(PlannedFault planned)
    {
        var fault = log.Begin(planned.Kind, 0, clock.Now, $"PostgreSQL stopped, started after {planned.Duration.TotalSeconds:0.0} s");
        output.WriteLine($"{Stamp()} {fault}");
        try
        {
            await cluster.StopDatabaseAsync();
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            output.WriteLine($"{Stamp()} stopping PostgreSQL failed: {ex.Message}");
        }
        await Task.Delay(planned.Duration);
        await HealAsync(fault, "PostgreSQL start", cluster.StartDatabaseAsync);
    }

    private async Task PartitionAsync(PlannedFault planned)
    {
        var host = planned.Host;
        var note = "";
        if (host == FaultSchedule.ManagementHost)
        {
            var running = await managementHost();
            host = running ?? 1;
            note = running is null ? " (management host unknown: host-1)" : " (runs the management service)";
        }
        // A peer named for the cut is never the victim itself (the management host was not known when planning).
        var cutFrom = planned.CutFrom.Select(p => p == $"host-{host}" ? $"host-{host % cluster.Hosts + 1}" : p).ToArray();
        if (cluster.PidOf(host) is { } pid)
        {
            // Cut off, Orleans declares it dead and it stops itself: allowed (README, "partitioned").
            watch.Expect(pid, $"the partition of host-{host}");
        }
        var from = cutFrom.Length == 0 ? "every other host and the database" : string.Join(", ", cutFrom);
        var fault = log.Begin(planned.Kind, host, clock.Now, $"host-{host}{note} cut off from {from} for {planned.Duration.TotalSeconds:0.0} s");
        output.WriteLine($"{Stamp()} {fault}");
        try
        {
            await cluster.PartitionAsync(host, cutFrom);
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            output.WriteLine($"{Stamp()} infra/partition failed: {ex.Message}");
        }
        await Task.Delay(planned.Duration);
        await HealAsync(fault, "partition heal", cluster.HealPartitionsAsync);
        // A host that stopped itself while cut off is started again.
        await HealAsync(fault, "restart", cluster.StartMissingHostsAsync);
    }

    private Task ReadOnlyDiskAsync(PlannedFault planned) =>
        DiskFaultAsync(planned, "disk read-only (chattr +i)", "disk writable", on => cluster.SetDiskReadOnlyAsync(planned.Host, readOnly: on));

    private Task FailingFsyncAsync(PlannedFault planned) =>
        DiskFaultAsync(planned, "fsyncs fail", "fsyncs succeed", on =>
        {
            cluster.SetFsyncFailing(planned.Host, failing: on);
            return Task.FromResult("");
        });

    /// <summary>A host's disk fails for a while (<paramref name="set"/> switches the failure on and off); then the host is killed and restarted, and joins empty.</summary>
    private async Task DiskFaultAsync(PlannedFault planned, string what, string healed, Func<bool, Task<string>> set)
    {
        var host = planned.Host;
        var fault = log.Begin(planned.Kind, host, clock.Now, $"host-{host}'s {what} for {planned.Duration.TotalSeconds:0.0} s, then healed, the host killed and restarted");
        output.WriteLine($"{Stamp()} {fault}");
        try
        {
            await set(true);
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or IOException)
        {
            output.WriteLine($"{Stamp()} host-{host}'s {what}: could not be switched on: {ex.Message}");
        }
        await Task.Delay(planned.Duration);
        await HealAsync(fault, healed, () => set(false));
        // Its store failed for good (fail-stop) if it wrote meanwhile: only a restart brings it back, empty.
        if (cluster.PidOf(host) is { } pid && LocalCluster.IsAlive(pid))
        {
            watch.Expect(pid, $"kill -9 of host-{host} after its disk failed");
            await LocalCluster.KillNineAsync(pid);
        }
        await HealAsync(fault, "restart", cluster.StartMissingHostsAsync);
    }

    private async Task PowerCutAsync(PlannedFault planned, int[] hosts)
    {
        var running = hosts.Where(h => cluster.PidOf(h) is { } pid && LocalCluster.IsAlive(pid)).ToArray();
        if (running.Length == 0)
        {
            output.WriteLine($"{Stamp()} skipped {planned.Kind}: no host of it runs");
            return;
        }
        var names = string.Join(", ", running.Select(h => $"host-{h}"));
        // All at once, as a power cut has it: the kills first, the roll-backs after.
        var pids = running.Select(h => cluster.PidOf(h)!.Value).ToArray();
        foreach (var (host, pid) in running.Zip(pids))
        {
            watch.Expect(pid, $"power cut of host-{host}");
        }
        await Task.WhenAll(pids.Select(LocalCluster.KillNineAsync));
        // Begun once every process is gone: for a cut of every host, the checkers take this as the
        // instant before which every answer was given (the history's eras, RegisterChecker).
        var fault = log.Begin(planned.Kind, hosts.Length == 1 ? hosts[0] : 0, clock.Now,
            $"power cut of {names}: kill -9, what no fsync made durable lost, restart after {planned.Duration.TotalSeconds:0.0} s");
        foreach (var host in running)
        {
            try
            {
                cluster.CutPower(host);
            }
            catch (Exception ex) when (ex is InvalidOperationException or IOException)
            {
                output.WriteLine($"{Stamp()} the power cut of host-{host} is only a kill: {ex.Message}");
            }
        }
        output.WriteLine($"{Stamp()} {fault}");
        await Task.Delay(planned.Duration);
        if (planned.Kind == FaultKind.ClusterPowerCut)
        {
            // No host answers from the cut until here: whatever the clients note meanwhile was answered before it.
            _clusterPowerCuts.Add(new PowerCut(fault.Started, clock.Now));
        }
        await HealAsync(fault, "restart", cluster.StartMissingHostsAsync);
    }

    private async Task HealAsync(Fault fault, string step, Func<Task<string>> heal)
    {
        try
        {
            await heal();
            log.End(fault, clock.Now);
            output.WriteLine($"{Stamp()} fault {fault.Id} healed ({step})");
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            log.End(fault, clock.Now, fault.Detail + $"; {step} FAILED");
            _anomalies.Add(Anomaly.NotAboutABlock("heal failed", $"fault {fault.Id} ({fault.Detail}): {step} failed: {ex.Message}", clock.Now));
            output.WriteLine($"{Stamp()} fault {fault.Id}: {step} failed: {ex.Message}");
        }
    }

    /// <summary>After the run: whatever is still broken is mended (every partition healed, PostgreSQL up, every host running).</summary>
    public async Task HealAllAsync()
    {
        var steps = new List<(string, Func<Task<string>>)>();
        if (cluster.Netns)
        {
            steps.Add(("partition heal", cluster.HealPartitionsAsync));
        }
        for (var host = 1; host <= cluster.Hosts; host++)
        {
            var disk = host;
            steps.Add(($"host-{host}'s disk writable", () => cluster.SetDiskReadOnlyAsync(disk, readOnly: false)));
            steps.Add(($"host-{host}'s fsyncs succeed", () =>
            {
                cluster.SetFsyncFailing(disk, failing: false);
                return Task.FromResult("");
            }));
        }
        steps.Add(("PostgreSQL start", cluster.StartDatabaseAsync));
        steps.Add(("restart of every host", cluster.StartMissingHostsAsync));
        foreach (var (step, heal) in steps)
        {
            try
            {
                await heal();
            }
            catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
            {
                _anomalies.Add(Anomaly.NotAboutABlock("heal failed", $"final {step} failed: {ex.Message}", clock.Now));
            }
        }
    }

    private string Stamp() => $"{clock.Now.TotalSeconds,8:0.000} s";
}
