using System.Net;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using OrleansStorage.Errors;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// What <c>ostor nbd serve</c> exports: Prometheus metrics on <c>--metrics ADDRESS:PORT</c>
/// (its own meter, the Orleans client's and the runtime's), and spans to an OTLP collector when one
/// is named. Checked before the cluster is reached, so a bad option is one line.
/// </summary>
public sealed class NbdTelemetry
{
    private readonly IPEndPoint? _metrics;
    private readonly Uri? _otlp;

    private NbdTelemetry(IPEndPoint? metrics, Uri? otlp)
    {
        _metrics = metrics;
        _otlp = otlp;
    }

    public static NbdTelemetry FromOptions(string? metrics, string? otlpEndpoint, bool insecure)
    {
        IPEndPoint? endpoint = null;
        if (metrics is not null)
        {
            if (!IPEndPoint.TryParse(metrics, out endpoint) || endpoint.Port == 0)
            {
                throw new InvalidRequestException($"--metrics '{metrics}' is not ADDRESS:PORT (e.g. 127.0.0.1:18180)");
            }
            if (!IPAddress.IsLoopback(endpoint.Address) && !insecure)
            {
                throw new InvalidRequestException($"--metrics {endpoint} is not a loopback address, and the metrics name every exported volume to whoever asks; give --insecure to serve them there anyway");
            }
        }
        otlpEndpoint ??= Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT");
        Uri? otlp = null;
        if (!string.IsNullOrWhiteSpace(otlpEndpoint) && !Uri.TryCreate(otlpEndpoint, UriKind.Absolute, out otlp))
        {
            throw new InvalidRequestException($"--otlp-endpoint '{otlpEndpoint}' is not an absolute URI (e.g. http://127.0.0.1:4317)");
        }
        return new NbdTelemetry(endpoint, otlp);
    }

    /// <summary>Starts the exporters asked for; disposing stops them.</summary>
    public IDisposable Start()
    {
        var started = new Started();
        if (_metrics is { } endpoint)
        {
            var prefix = $"http://{(endpoint.Address.Equals(IPAddress.IPv6Loopback) ? "[::1]" : endpoint.Address.ToString())}:{endpoint.Port}/";
            try
            {
                started.Meters = Sdk.CreateMeterProviderBuilder()
                    .ConfigureResource(resource => resource.AddService("ostor-nbd"))
                    .AddMeter(StorageTelemetry.MeterName, "Microsoft.Orleans", "System.Runtime")
                    .AddPrometheusHttpListener(o =>
                    {
                        o.Host = endpoint.Address.ToString();
                        o.Port = endpoint.Port;
                    })
                    .Build();
            }
            catch (Exception ex) when (ex is HttpListenerException or InvalidOperationException)
            {
                throw new InvalidRequestException($"--metrics {endpoint}: cannot listen there ({ex.Message}); is the port taken?");
            }
            Console.Error.WriteLine($"ostor: metrics at {prefix}metrics");
        }
        if (_otlp is { } otlp)
        {
            started.Traces = Sdk.CreateTracerProviderBuilder()
                .ConfigureResource(resource => resource.AddService("ostor-nbd"))
                .AddSource(StorageTelemetry.ActivitySourceName)
                .AddOtlpExporter(o => o.Endpoint = otlp)
                .Build();
        }
        return started;
    }

    private sealed class Started : IDisposable
    {
        public MeterProvider? Meters { get; set; }

        public TracerProvider? Traces { get; set; }

        public void Dispose()
        {
            Meters?.Dispose();
            Traces?.Dispose();
        }
    }
}
