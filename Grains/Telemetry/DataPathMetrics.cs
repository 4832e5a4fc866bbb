using System.Collections.Concurrent;
using System.Collections.Frozen;
using System.Collections.Immutable;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using OrleansStorage.DataPort;
using OrleansStorage.Hosting;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Telemetry;

/// <summary>
/// The data requests this host's storage server answered, per volume and operation: how many, how
/// many bytes, how long each took, and which failed and why. Operations and bytes are plain totals
/// (an interlocked add per request) that the exporter reads when scraped and the dashboard reads
/// through <see cref="IStorageServerGrain.GetStatusAsync"/>; only the latency goes through the
/// meter on every request.
/// </summary>
public sealed class DataPathMetrics
{
    private static readonly string[] OpLabels = Labels<DataOp>();
    private static readonly string[] StatusLabels = Labels<DataStatus>();

    private readonly ConcurrentDictionary<(Guid Volume, DataOp Op), Totals> _totals = new();
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _errors;
    private readonly string _hostId;

    /// <summary>Volume (and snapshot) names by id, from the last map: labels name volumes, not ids.</summary>
    private FrozenDictionary<Guid, string> _names = FrozenDictionary<Guid, string>.Empty;

    public DataPathMetrics(IMeterFactory meters, IOptions<StorageServerOptions> options)
    {
        _hostId = options.Value.HostId;
        var meter = meters.Create(StorageTelemetry.MeterName);
        meter.CreateObservableCounter("ostor.data.operations", () => Observe(t => Volatile.Read(ref t.Operations)), "{operation}",
            "Data requests this host served successfully, by volume and operation (a replicated write counts once as write on its primary and once as replica_write on each other replica)");
        meter.CreateObservableCounter("ostor.data.transferred", () => Observe(t => Volatile.Read(ref t.Bytes)), "By",
            "Payload bytes of the data requests this host served, by volume and operation");
        _duration = meter.CreateHistogram("ostor.data.duration", "s",
            "How long this host took to answer a data request, from its arrival to its reply, by volume and operation",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = StorageTelemetry.LatencyBuckets });
        _errors = meter.CreateCounter<long>("ostor.data.errors", "{error}",
            "Data requests this host refused or failed, by volume, operation and kind (stale_epoch, misdirected, unavailable, io_error, ...)");
    }

    /// <summary>Takes the volume names of a map the storage server adopted.</summary>
    public void MapAdopted(ClusterMap map)
    {
        var names = new Dictionary<Guid, string>();
        foreach (var volume in map.Volumes)
        {
            names[volume.VolumeId] = volume.Name;
            foreach (var snapshot in volume.Snapshots)
            {
                names[snapshot.SnapshotId] = $"{volume.Name}@{snapshot.Name}";
            }
        }
        _names = names.ToFrozenDictionary();
    }

    /// <summary>One answered request; <paramref name="started"/> is a <see cref="Stopwatch.GetTimestamp"/>.</summary>
    public void Record(DataOp op, Guid volumeId, long bytes, long started, DataStatus status)
    {
        var volume = NameOf(volumeId);
        var tags = new TagList { { "volume", volume }, { "op", OpLabels[(byte)op] }, { "host", _hostId } };
        _duration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, tags);
        if (status is DataStatus.Ok)
        {
            var totals = _totals.GetOrAdd((volumeId, op), static _ => new Totals());
            Interlocked.Increment(ref totals.Operations);
            Interlocked.Add(ref totals.Bytes, bytes);
        }
        else
        {
            tags.Add("kind", StatusLabels[(byte)status]);
            _errors.Add(1, tags);
        }
    }

    /// <summary>Reads and writes per volume since this host started, for the dashboard's rates.</summary>
    public ImmutableArray<VolumeIoTotals> VolumeTotals()
    {
        var byVolume = new Dictionary<Guid, VolumeIoTotals>();
        foreach (var ((volumeId, op), totals) in _totals)
        {
            var sum = byVolume.GetValueOrDefault(volumeId) ?? new VolumeIoTotals(volumeId, 0, 0, 0, 0);
            var operations = Volatile.Read(ref totals.Operations);
            var bytes = Volatile.Read(ref totals.Bytes);
            byVolume[volumeId] = op switch
            {
                DataOp.Read or DataOp.SnapshotRead => sum with { ReadOperations = sum.ReadOperations + operations, ReadBytes = sum.ReadBytes + bytes },
                DataOp.Write or DataOp.Trim => sum with { WriteOperations = sum.WriteOperations + operations, WriteBytes = sum.WriteBytes + bytes },
                _ => sum,
            };
        }
        return [.. byVolume.Values];
    }

    private string NameOf(Guid volumeId) => _names.TryGetValue(volumeId, out var name) ? name : volumeId.ToString();

    private IEnumerable<Measurement<long>> Observe(Func<Totals, long> value)
    {
        foreach (var ((volumeId, op), totals) in _totals)
        {
            yield return new Measurement<long>(value(totals), new KeyValuePair<string, object?>("volume", NameOf(volumeId)),
                new KeyValuePair<string, object?>("op", OpLabels[(byte)op]), new KeyValuePair<string, object?>("host", _hostId));
        }
    }

    private static string[] Labels<TEnum>() where TEnum : struct, Enum
    {
        var labels = new string[256];
        for (var i = 0; i < labels.Length; i++)
        {
            labels[i] = "unknown_" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        foreach (var value in Enum.GetValues<TEnum>())
        {
            labels[Convert.ToByte(value, System.Globalization.CultureInfo.InvariantCulture)] = StorageTelemetry.LabelOf(value.ToString());
        }
        return labels;
    }

    private sealed class Totals
    {
        public long Operations;
        public long Bytes;
    }
}
