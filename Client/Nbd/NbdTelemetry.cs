using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using OrleansStorage.Errors;
using OrleansStorage.Security;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// What <c>ostor nbd serve</c> exports: Prometheus metrics at <c>http://ADDRESS:PORT/metrics</c>
/// (<c>--metrics</c>; its own meter, the Orleans client's and the runtime's), guarded by the
/// cluster's web password when it has the cluster's certificates, as the hosts' are; and spans to
/// an OTLP collector when one is named. Checked before the cluster is reached, so a bad option is
/// one line.
/// </summary>
public sealed class NbdTelemetry
{
    private static readonly string[] Meters = [StorageTelemetry.MeterName, "Microsoft.Orleans", "System.Runtime"];

    private readonly IPEndPoint? _metrics;
    private readonly WebCredentials? _credentials;
    private readonly bool _tracing;
    private readonly Uri? _otlp;

    private NbdTelemetry(IPEndPoint? metrics, WebCredentials? credentials, bool tracing, Uri? otlp)
    {
        _metrics = metrics;
        _credentials = credentials;
        _tracing = tracing;
        _otlp = otlp;
    }

    /// <param name="pki">The cluster's certificates, whose web password guards the metrics; null: none asked (loopback only).</param>
    public static NbdTelemetry FromOptions(string? metrics, string? otlpEndpoint, PkiDirectory? pki, bool insecure)
    {
        IPEndPoint? endpoint = null;
        WebCredentials? credentials = null;
        if (metrics is not null)
        {
            if (!IPEndPoint.TryParse(metrics, out endpoint) || endpoint.Port == 0)
            {
                throw new InvalidRequestException($"--metrics '{metrics}' is not ADDRESS:PORT (e.g. 127.0.0.1:18190)");
            }
            credentials = pki?.LoadWebPassword();
            if (credentials is null && !IPAddress.IsLoopback(endpoint.Address) && !insecure)
            {
                throw new InvalidRequestException($"--metrics {endpoint} is not a loopback address, and without the cluster's certificates (--pki) the metrics would ask for no password there; give --insecure to serve them anyway");
            }
        }
        var tracing = StorageTelemetry.TryOtlp(otlpEndpoint, out var otlp, out var problem);
        return problem is null ? new NbdTelemetry(endpoint, credentials, tracing, otlp) : throw new InvalidRequestException(problem);
    }

    /// <summary>Starts the exporters asked for; disposing stops them.</summary>
    public async Task<IAsyncDisposable> StartAsync()
    {
        var started = new Started();
        if (_tracing)
        {
            started.Traces = Sdk.CreateTracerProviderBuilder()
                .ConfigureResource(resource => resource.AddService("ostor-nbd"))
                .AddSource(StorageTelemetry.ActivitySourceName)
                .AddOtlpExporter(o =>
                {
                    if (_otlp is not null)
                    {
                        o.Endpoint = _otlp;
                    }
                })
                .Build();
        }
        if (_metrics is { } endpoint)
        {
            started.Web = BuildMetricsEndpoint(endpoint);
            try
            {
                await started.Web.StartAsync();
            }
            catch (IOException ex)
            {
                await started.DisposeAsync();
                throw new InvalidRequestException($"--metrics {endpoint}: cannot listen there ({ex.Message}); is the port taken?");
            }
            Console.Error.WriteLine($"ostor: metrics at http://{endpoint}/metrics" + (_credentials is null ? "" : " (HTTP Basic authentication with the cluster's web.password)"));
        }
        return started;
    }

    private WebApplication BuildMetricsEndpoint(IPEndPoint endpoint)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(endpoint);
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("ostor-nbd"))
            .WithMetrics(metrics => metrics.AddMeter(Meters).AddPrometheusExporter());
        var app = builder.Build();
        if (_credentials is { } credentials)
        {
            app.Use((context, next) => credentials.Admits(context.Request.Headers.Authorization) ? next(context) : AskForPasswordAsync(context));
        }
        app.MapPrometheusScrapingEndpoint("/metrics");
        return app;
    }

    private sealed class Started : IAsyncDisposable
    {
        public WebApplication? Web { get; set; }

        public TracerProvider? Traces { get; set; }

        public async ValueTask DisposeAsync()
        {
            if (Web is not null)
            {
                await Web.DisposeAsync();
            }
            Traces?.Dispose();
        }
    }

    /// <summary>401 with the challenge that makes a browser ask for the password.</summary>
    private static Task AskForPasswordAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status401Unauthorized;
        context.Response.Headers.WWWAuthenticate = WebCredentials.Challenge;
        return Task.CompletedTask;
    }
}
