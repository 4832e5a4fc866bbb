using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using OrleansStorage.Auth;
using OrleansStorage.Hosting;
using OrleansStorage.Maps;
using OrleansStorage.Qos;
using OrleansStorage.Segments;

namespace OrleansStorage.Telemetry;

/// <summary>
/// This host as its storage server sees it: the epoch it serves, how it learned of each new map,
/// its disk (capacity offered, bytes used), its recovery copies, and the requests its QoS and access
/// control held back. The storage server sets the values; the exporter reads them when scraped.
/// </summary>
public sealed class HostMetrics
{
    /// <summary>Counting the bytes used walks the data directory: at most once in this long.</summary>
    private static readonly TimeSpan UsageMaxAge = TimeSpan.FromSeconds(10);

    private readonly IServiceProvider _services;
    private readonly KeyValuePair<string, object?> _host;
    private readonly Counter<long> _mapUpdates;
    private readonly Counter<long> _pushes;
    private readonly Counter<long> _copiedSegments;
    private readonly Counter<long> _copiedBytes;
    private readonly Lock _usageLock = new();
    private long _epoch;
    private long _capacity;
    private long _pendingSegments;
    private (long Bytes, long At) _usage = (-1, 0);

    public HostMetrics(IMeterFactory meters, IOptions<StorageServerOptions> options, IServiceProvider services)
    {
        _services = services;
        _host = new("host", options.Value.HostId);
        var meter = meters.Create(StorageTelemetry.MeterName);
        meter.CreateObservableGauge("ostor.host.epoch", () => Observe(Volatile.Read(ref _epoch)), "{epoch}",
            "The epoch of the map this host's storage server serves");
        meter.CreateObservableGauge("ostor.host.capacity", () => Observe(Volatile.Read(ref _capacity)), "By",
            "The capacity this host offers to the cluster");
        meter.CreateObservableGauge("ostor.host.used", ObserveUsed, "By",
            "Bytes this host's segment files (volumes and snapshot copies) take on its disk");
        meter.CreateObservableGauge("ostor.recovery.pending_segments", () => Observe(Volatile.Read(ref _pendingSegments)), "{segment}",
            "Segments the copies this host runs as a primary have still to go through");
        _copiedSegments = meter.CreateCounter<long>("ostor.recovery.copied_segments", "{segment}",
            "Segments this host copied to pending replicas (resync, re-replication, evacuation)");
        _copiedBytes = meter.CreateCounter<long>("ostor.recovery.copied", "By",
            "Bytes this host copied to pending replicas");
        _mapUpdates = meter.CreateCounter<long>("ostor.host.map_updates", "{map}",
            "New maps this host adopted, by what made it look: push, request (a request at a newer epoch), lease, refresh (management's hint), activation");
        _pushes = meter.CreateCounter<long>("ostor.host.pushes", "{push}",
            "Map pushes this host received, by outcome: newer (it pulled the map), known (not newer), dropped (refused by its push filter)");
        meter.CreateObservableCounter("ostor.qos.delayed", () => Observe(services.GetRequiredService<VolumeQosGate>().Delayed), "{request}",
            "Requests this host held back or refused to keep a volume within its QoS limits");
        meter.CreateObservableCounter("ostor.access.refused", () => Observe(services.GetRequiredService<AccessControl>().Refused), "{request}",
            "Requests this host refused for want of a valid ticket or capability");
    }

    public void MapAdopted(ClusterMap map, string hostId, string trigger)
    {
        Volatile.Write(ref _epoch, map.Epoch);
        if (map.FindHost(hostId) is { } host)
        {
            Volatile.Write(ref _capacity, host.CapacityBytes);
        }
        _mapUpdates.Add(1, new KeyValuePair<string, object?>("trigger", trigger), _host);
    }

    public void PushReceived(string outcome) => _pushes.Add(1, new KeyValuePair<string, object?>("outcome", outcome), _host);

    public void SegmentCopied(long bytes)
    {
        _copiedSegments.Add(1, _host);
        _copiedBytes.Add(bytes, _host);
    }

    public void PendingSegments(long segments) => Volatile.Write(ref _pendingSegments, segments);

    private Measurement<long> Observe(long value) => new(value, _host);

    private IEnumerable<Measurement<long>> ObserveUsed()
    {
        lock (_usageLock)
        {
            if (_usage.Bytes < 0 || Stopwatch.GetElapsedTime(_usage.At) > UsageMaxAge)
            {
                try
                {
                    _usage = (_services.GetRequiredService<SegmentStore>().Usage().BytesUsed, Stopwatch.GetTimestamp());
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidOperationException)
                {
                    // Not open yet, or the disk failed: no sample rather than a wrong one.
                    return [];
                }
            }
            return [Observe(_usage.Bytes)];
        }
    }
}
