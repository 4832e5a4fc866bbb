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

try
{
    var http = SiloHttp.ReadOptions(args);
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
catch (Exception ex) when (StartupError(ex) is { } line)
{
    Console.Error.WriteLine($"ostor-silo: {line}");
    return 2;
}

// The one line for an exception that stopped the start: ours and configuration errors as they
// are, anything else with its type, searched through wrappers.
static string? StartupError(Exception error)
{
    for (var ex = error; ex is not null; ex = ex.InnerException)
    {
        // Kestrel's bind failure names the address; its inner exception only says "Address already
        // in use". The start-up port check misses a port taken in the moment between it and the bind.
        if (ex is IOException { InnerException: Microsoft.AspNetCore.Connections.AddressInUseException })
        {
            return $"the http port is not free ({ex.Message.ReplaceLineEndings(" ").TrimEnd('.')}): another process, perhaps another cluster's silo, holds it; stop it or give --http-port another port (0 turns the endpoint off)";
        }
        if (ex is HostStartupException or InvalidOperationException or OptionsValidationException or FormatException)
        {
            return ex.Message.ReplaceLineEndings(" ");
        }
    }
    return $"failed to start: {error.GetType().Name}: {error.Message.ReplaceLineEndings(" ")}";
}
