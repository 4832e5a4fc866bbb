using System.Diagnostics;
using System.Diagnostics.Metrics;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// What the NBD server did, per export and command, as its clients (qemu, fio, the kernel) see it:
/// commands answered, bytes moved, how long each took from its arrival to its reply, errors by NBD
/// error code; and its connections. Exported by <c>ostor nbd serve --metrics ADDRESS:PORT</c>.
/// </summary>
public sealed class NbdMetrics : IDisposable
{
    private readonly Meter _meter = new(StorageTelemetry.MeterName);
    private readonly Counter<long> _requests;
    private readonly Counter<long> _bytes;
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _errors;

    public NbdMetrics(NbdServer server)
    {
        _requests = _meter.CreateCounter<long>("ostor.nbd.requests", "{request}", "NBD commands answered successfully, by export and command");
        _bytes = _meter.CreateCounter<long>("ostor.nbd.transferred", "By", "Bytes read and written by NBD commands, by export and command");
        _duration = _meter.CreateHistogram("ostor.nbd.duration", "s", "How long an NBD command took from its arrival to its reply, by export and command",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = StorageTelemetry.LatencyBuckets });
        _errors = _meter.CreateCounter<long>("ostor.nbd.errors", "{request}", "NBD commands answered with an error, by export, command and NBD error (eperm, eio, einval, enospc, ...)");
        _meter.CreateObservableGauge("ostor.nbd.connections", () => server.OpenConnections, "{connection}", "NBD connections open now");
        _meter.CreateObservableCounter("ostor.nbd.connections_refused", () => server.ConnectionsRefused, "{connection}", "NBD connections closed by the caps: a handshake displaced by a newer one, or a finished handshake over the session caps");
    }

    /// <param name="error">0, or the NBD error the command was answered with.</param>
    public void Record(string export, string command, long bytes, long started, uint error, string errorName)
    {
        var tags = new TagList { { "export", export }, { "command", command } };
        _duration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, tags);
        if (error == 0)
        {
            _requests.Add(1, tags);
            if (bytes > 0)
            {
                _bytes.Add(bytes, tags);
            }
        }
        else
        {
            tags.Add("error", errorName);
            _errors.Add(1, tags);
        }
    }

    public void Dispose() => _meter.Dispose();
}
