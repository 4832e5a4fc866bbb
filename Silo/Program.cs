using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using OrleansStorage.Identity;
using OrleansStorage.Silo.Hosting;
using OrleansStorage.Silo.Web;

// One OrleansStorage host: an Orleans silo with this host's storage server, and its HTTP endpoint
// (/metrics, the dashboard) unless --http-port 0.
// Configuration: appsettings.json, then OSTOR_-prefixed environment variables
// (OSTOR_Storage__HostId), then the command line (--host-id host-1 --data .data/host-1 ...).
// Whatever stops it from starting is one line on standard error and exit code 2.
// --recover is a flag; the configuration's command line wants a value for every switch.
args = [.. args.Select(arg => arg == "--recover" ? "--recover=true" : arg)];
// Segments are volume data, the map and superblock name volumes and clients: the owner's alone,
// whatever umask the silo was started with (docs/security.md, "Files on disk").
OrleansStorage.Files.PrivateFiles.RestrictProcess();

SiloHttpOptions? http = null;
try
{
    http = SiloHttp.ReadOptions(args);
    IHostApplicationBuilder builder = http.IsOn
        ? WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory })
        : Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
    builder.Configuration.AddEnvironmentVariables("OSTOR_");
    builder.Configuration.AddCommandLine(args, SiloConfiguration.SwitchMappings);
    builder.UseOrleans(silo =>
    {
        SiloConfiguration.ConfigureSilo(silo, builder.Configuration);
        if (http.IsOn)
        {
            SiloHttp.ConfigureSilo(silo, http);
        }
    });
    using IHost host = builder is WebApplicationBuilder web ? SiloHttp.Build(web, http) : ((HostApplicationBuilder)builder).Build();
    // Data directory and database first, before the silo joins anything: a refusal is all a person sees.
    await host.Services.GetRequiredService<DataDirectoryCheck>().EnsureAsync(CancellationToken.None);
    await host.RunAsync();
    return 0;
}
catch (Exception ex) when (StartupError(ex, http) is { } line)
{
    Console.Error.WriteLine($"ostor-silo: {line}");
    return 2;
}

// The one line for an exception that stopped the start: ours and configuration errors as they
// are, anything else with its type, searched through wrappers.
static string? StartupError(Exception error, SiloHttpOptions? http)
{
    for (var ex = error; ex is not null; ex = ex.InnerException)
    {
        // The start-up port check misses a port taken in the moment between it and Kestrel's bind,
        // whose failure (an IOException around this one) does not say which door it was.
        if (ex is IOException { InnerException: Microsoft.AspNetCore.Connections.AddressInUseException } && http is not null)
        {
            return PortCheck.NotFree("http", $"{http.Address}:{http.Port}", nameof(System.Net.Sockets.SocketError.AddressAlreadyInUse));
        }
        if (ex is HostStartupException or InvalidOperationException or OptionsValidationException or FormatException)
        {
            return ex.Message.ReplaceLineEndings(" ");
        }
    }
    return $"failed to start: {error.GetType().Name}: {error.Message.ReplaceLineEndings(" ")}";
}
