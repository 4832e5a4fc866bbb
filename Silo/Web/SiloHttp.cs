using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using Orleans.Dashboard;
using OrleansStorage.Errors;
using OrleansStorage.Hosting;
using OrleansStorage.Silo.Hosting;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Silo.Web;

/// <summary>
/// The silo's HTTP endpoint (docs/monitoring.md): <c>/metrics</c> in the Prometheus text format,
/// the dashboard at <c>/</c> with its data at <c>/api/overview</c>, the Orleans Dashboard at
/// <c>/orleans/</c>. Read-only: nothing here changes the cluster. Anything else is 404.
/// </summary>
public static class SiloHttp
{
    /// <summary>The meters exported: ours, Orleans' own, the .NET runtime's.</summary>
    private static readonly string[] Meters = [StorageTelemetry.MeterName, "Microsoft.Orleans", "System.Runtime"];

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>
    /// The endpoint's settings as the silo will see them, read before the host is built (whether
    /// there is an endpoint decides which host to build): appsettings.json, OSTOR_ variables, the command line.
    /// </summary>
    public static SiloHttpOptions ReadOptions(string[] args)
    {
        var configuration = new ConfigurationBuilder()
            .SetBasePath(AppContext.BaseDirectory)
            .AddJsonFile("appsettings.json", optional: true)
            .AddEnvironmentVariables("OSTOR_")
            .AddCommandLine(args, SiloConfiguration.SwitchMappings)
            .Build();
        var options = configuration.GetSection(SiloHttpOptions.SectionName).Get<SiloHttpOptions>() ?? new SiloHttpOptions();
        if (options.Problem() is { } problem)
        {
            throw new InvalidOperationException("invalid configuration: " + problem);
        }
        if (options.IsOn && PortCheck.Taken(IPAddress.Parse(options.Address), ("http", options.Port)) is { } taken)
        {
            throw new InvalidOperationException(taken);
        }
        return options;
    }

    /// <summary>The Orleans Dashboard's grains and call profiler, on every silo that serves HTTP.</summary>
    public static void ConfigureSilo(ISiloBuilder silo) => silo.AddDashboard();

    public static WebApplication Build(WebApplicationBuilder builder, SiloHttpOptions http)
    {
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Parse(http.Address), http.Port);
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddSingleton<ClusterOverview>();
        var hostId = builder.Configuration[$"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.HostId)}"] ?? "";
        var otlp = OtlpEndpoint(builder.Configuration);
        var telemetry = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("ostor-silo", serviceInstanceId: hostId))
            .WithMetrics(metrics => metrics.AddMeter(Meters).AddPrometheusExporter());
        if (otlp is not null)
        {
            // Off unless asked for: with no listener, StartActivity returns null and tracing costs nothing.
            telemetry.WithTracing(tracing => tracing
                .AddSource(StorageTelemetry.ActivitySourceName, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application")
                .AddOtlpExporter(o => o.Endpoint = otlp));
        }

        var app = builder.Build();
        app.UseDefaultFiles();
        app.UseStaticFiles();
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapGet("/api/overview", OverviewAsync);
        app.MapOrleansDashboard("/orleans");
        app.Lifetime.ApplicationStarted.Register(() =>
            app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("OrleansStorage.Silo.Web")
                .LogInformation("Dashboard at http://{Address}:{Port}/, metrics at /metrics, Orleans Dashboard at /orleans/", http.Address, http.Port));
        return app;
    }

    /// <summary>Tracing's endpoint: <c>Telemetry:OtlpEndpoint</c> (<c>--otlp-endpoint</c>), else the standard variable; null when neither is set.</summary>
    private static Uri? OtlpEndpoint(IConfiguration configuration)
    {
        var value = configuration["Telemetry:OtlpEndpoint"];
        if (string.IsNullOrWhiteSpace(value))
        {
            value = Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT");
        }
        if (string.IsNullOrWhiteSpace(value))
        {
            return null;
        }
        return Uri.TryCreate(value, UriKind.Absolute, out var uri)
            ? uri
            : throw new InvalidOperationException($"invalid configuration: the OTLP endpoint '{value}' (--otlp-endpoint) is not an absolute URI");
    }

    private static async Task<IResult> OverviewAsync(ClusterOverview overview)
    {
        try
        {
            return Results.Json(await overview.GetAsync(), Json);
        }
        catch (Exception ex) when (ex is StorageException or TimeoutException or OrleansException)
        {
            return Results.Json(new { error = $"the management service did not answer: {ex.Message}" }, Json, statusCode: StatusCodes.Status503ServiceUnavailable);
        }
    }
}
