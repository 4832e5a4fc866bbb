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
using OrleansStorage.Security;
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
        var secured = !string.IsNullOrEmpty(configuration[$"{ClusterHostOptions.SectionName}:{nameof(ClusterHostOptions.PkiDirectory)}"]);
        if (options.IsOn && !secured && !IPAddress.IsLoopback(IPAddress.Parse(options.Address)))
        {
            throw new InvalidOperationException($"invalid configuration: Http:Address {options.Address} is not a loopback address, and without the cluster's certificates (--pki) the dashboard and /metrics would ask for no password there");
        }
        if (options.IsOn && PortCheck.Taken(IPAddress.Parse(options.Address), ("http", options.Port)) is { } taken)
        {
            throw new InvalidOperationException(taken);
        }
        return options;
    }

    /// <summary>The Orleans Dashboard's grains and call profiler, on every silo that serves HTTP (unless <see cref="SiloHttpOptions.OrleansDashboard"/> is off).</summary>
    public static void ConfigureSilo(ISiloBuilder silo, SiloHttpOptions http)
    {
        if (http.OrleansDashboard)
        {
            silo.AddDashboard();
        }
    }

    public static WebApplication Build(WebApplicationBuilder builder, SiloHttpOptions http)
    {
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Parse(http.Address), http.Port);
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddSingleton<ClusterOverview>();
        var hostId = builder.Configuration[$"{StorageServerOptions.SectionName}:{nameof(StorageServerOptions.HostId)}"] ?? "";
        var tracing = StorageTelemetry.TryOtlp(builder.Configuration["Telemetry:OtlpEndpoint"], out var otlp, out var problem);
        if (problem is not null)
        {
            throw new InvalidOperationException("invalid configuration: " + problem);
        }
        var telemetry = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("ostor-silo", serviceInstanceId: hostId))
            .WithMetrics(metrics => metrics.AddMeter(Meters(http)).AddPrometheusExporter());
        if (tracing)
        {
            // Off unless asked for: with no listener, StartActivity returns null and tracing costs nothing.
            telemetry.WithTracing(tracing => tracing
                .AddSource(StorageTelemetry.ActivitySourceName, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application")
                .AddOtlpExporter(o =>
                {
                    if (otlp is not null)
                    {
                        o.Endpoint = otlp;
                    }
                }));
        }

        var credentials = Credentials(builder.Configuration);
        var app = builder.Build();
        if (credentials is not null)
        {
            // Before anything else: without the password even a wrong path is only a 401.
            app.Use((context, next) => credentials.Admits(context.Request.Headers.Authorization) ? next(context) : AskForPasswordAsync(context));
        }
        app.UseDefaultFiles();
        app.UseStaticFiles();
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapGet("/api/overview", OverviewAsync);
        if (http.OrleansDashboard)
        {
            app.MapOrleansDashboard("/orleans");
        }
        app.Lifetime.ApplicationStarted.Register(() =>
            app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("OrleansStorage.Silo.Web")
                .LogInformation("Dashboard at http://{Address}:{Port}/, metrics at /metrics, Orleans Dashboard at /orleans/", http.Address, http.Port));
        return app;
    }

    /// <summary>The meters exported: ours, the .NET runtime's, and Orleans' own unless turned off.</summary>
    private static string[] Meters(SiloHttpOptions http) =>
        http.OrleansMetrics ? [StorageTelemetry.MeterName, "System.Runtime", "Microsoft.Orleans"] : [StorageTelemetry.MeterName, "System.Runtime"];

    /// <summary>
    /// On a cluster with certificates, the cluster's web password guards every path (the pages
    /// name every host and volume); without them the silo serves loopback only, as it does its
    /// other doors, and asks for nothing.
    /// </summary>
    private static WebCredentials? Credentials(IConfiguration configuration)
    {
        var pki = configuration[$"{ClusterHostOptions.SectionName}:{nameof(ClusterHostOptions.PkiDirectory)}"];
        if (string.IsNullOrEmpty(pki))
        {
            return null;
        }
        try
        {
            return new PkiDirectory(pki).LoadWebPassword();
        }
        catch (Exception ex) when (ex is StorageException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"the HTTP endpoint (--pki {pki}): {ex.Message}", ex);
        }
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

    /// <summary>401 with the challenge that makes a browser ask for the password.</summary>
    private static Task AskForPasswordAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status401Unauthorized;
        context.Response.Headers.WWWAuthenticate = WebCredentials.Challenge;
        return Task.CompletedTask;
    }
}
