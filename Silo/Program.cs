using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using OrleansStorage.Silo.Hosting;

// One OrleansStorage host: an Orleans silo with this host's storage server.
// Configuration: appsettings.json, then OSTOR_-prefixed environment variables
// (OSTOR_Storage__HostId), then the command line (--host-id host-1 --data .data/host-1 ...).
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
{
    Args = args,
    ContentRootPath = AppContext.BaseDirectory,
});
builder.Configuration.AddEnvironmentVariables("OSTOR_");
builder.Configuration.AddCommandLine(args, SiloConfiguration.SwitchMappings);

try
{
    builder.UseOrleans(silo => SiloConfiguration.ConfigureSilo(silo, builder.Configuration));
    using var host = builder.Build();
    await host.RunAsync();
    return 0;
}
catch (Exception ex) when (ex is InvalidOperationException or OptionsValidationException or FormatException)
{
    Console.Error.WriteLine($"ostor-silo: {ex.Message}");
    return 2;
}
