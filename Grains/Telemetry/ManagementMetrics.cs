using System.Collections.Immutable;
using System.Diagnostics.Metrics;
using OrleansStorage.Maps;

namespace OrleansStorage.Telemetry;

/// <summary>
/// The cluster as the management service sees it, exported only by the silo it runs on (every
/// other silo reports none of these series): its epoch, hosts by state, placement groups by
/// health, the epoch mismatches reported to it (kept in PostgreSQL, so a failover keeps counting
/// where the last activation stopped), and its map changes and pushes.
/// </summary>
public sealed class ManagementMetrics
{
    private readonly Counter<long> _pushes;
    private readonly Counter<long> _mapChanges;
    private Snapshot? _current;

    public ManagementMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(StorageTelemetry.MeterName);
        meter.CreateObservableGauge<long>("ostor.management.active", () => Volatile.Read(ref _current) is null ? [] : [new Measurement<long>(1)], "{service}",
            "1 on the silo the management service runs on; absent elsewhere");
        meter.CreateObservableGauge<long>("ostor.management.epoch", () => Volatile.Read(ref _current) is { } now ? [new Measurement<long>(now.Map.Epoch)] : [], "{epoch}",
            "The epoch of the cluster map the management service last persisted");
        meter.CreateObservableGauge("ostor.hosts", ObserveHosts, "{host}",
            "Hosts in the map by state (up, down, out, draining)");
        meter.CreateObservableGauge("ostor.host.state", ObserveHostStates, "{host}",
            "1 for each host in the map, labelled with its state (up, down, out, draining): what alerts on a host key on");
        meter.CreateObservableGauge("ostor.placement_groups", ObserveGroups, "{group}",
            "Placement groups by volume and health (healthy, recovering, degraded, unavailable)");
        meter.CreateObservableCounter("ostor.epoch_mismatches", ObserveMismatches, "{report}",
            "Epoch mismatches reported to the management service, by the host that reported them; persisted, so they survive a failover");
        _pushes = meter.CreateCounter<long>("ostor.management.pushes", "{push}",
            "Map pushes the management service published on the map stream, by outcome (sent, failed)");
        _mapChanges = meter.CreateCounter<long>("ostor.management.map_changes", "{change}",
            "Map changes the management service persisted");
    }

    /// <summary>The management service runs here with this map and these mismatch counts.</summary>
    public void Serving(ClusterMap map, ImmutableDictionary<string, long> mismatches) =>
        Volatile.Write(ref _current, new Snapshot(map, mismatches));

    /// <summary>It stopped running here: its series go with it.</summary>
    public void Stopped() => Volatile.Write(ref _current, null);

    public void MapChanged() => _mapChanges.Add(1);

    public void Pushed(bool sent) => _pushes.Add(1, new KeyValuePair<string, object?>("outcome", sent ? "sent" : "failed"));

    private IEnumerable<Measurement<long>> ObserveHosts()
    {
        if (Volatile.Read(ref _current) is not { } now)
        {
            yield break;
        }
        foreach (var state in Enum.GetValues<HostState>())
        {
            yield return new Measurement<long>(now.Map.Hosts.Count(h => h.State == state),
                new KeyValuePair<string, object?>("state", StorageTelemetry.LabelOf(state.ToString())));
        }
    }

    private IEnumerable<Measurement<long>> ObserveHostStates()
    {
        if (Volatile.Read(ref _current) is not { } now)
        {
            yield break;
        }
        foreach (var host in now.Map.Hosts)
        {
            yield return new Measurement<long>(1,
                new KeyValuePair<string, object?>("host", host.HostId),
                new KeyValuePair<string, object?>("state", StorageTelemetry.LabelOf(host.State.ToString())));
        }
    }

    private IEnumerable<Measurement<long>> ObserveGroups()
    {
        if (Volatile.Read(ref _current) is not { } now)
        {
            yield break;
        }
        foreach (var volume in now.Map.Volumes)
        {
            foreach (var health in Enum.GetValues<GroupHealth>())
            {
                yield return new Measurement<long>(volume.PlacementGroups.Count(pg => pg.HealthAt(volume.ReplicationFactor) == health),
                    new KeyValuePair<string, object?>("volume", volume.Name),
                    new KeyValuePair<string, object?>("health", StorageTelemetry.LabelOf(health.ToString())));
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveMismatches()
    {
        if (Volatile.Read(ref _current) is not { } now)
        {
            yield break;
        }
        foreach (var (host, count) in now.Mismatches)
        {
            yield return new Measurement<long>(count, new KeyValuePair<string, object?>("reporting_host", host));
        }
    }

    private sealed record Snapshot(ClusterMap Map, ImmutableDictionary<string, long> Mismatches);
}
