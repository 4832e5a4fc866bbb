using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansStorage.Identity;
using OrleansStorage.Logging;
using OrleansStorage.Management;
using OrleansStorage.Storage;

namespace OrleansStorage.Hosting;

/// <summary>
/// Once the silo is active, registers this host with the management service and activates its
/// storage server (which then subscribes to map pushes). Retries until it succeeds, so a host
/// that starts before the rest of the cluster simply registers a little later. Then it registers
/// again every <see cref="StorageServerOptions.RegistrationInterval"/>: that is a no-op while the
/// map agrees, re-activates the management service after its silo died (its timer drives
/// recovery), and brings back a host that was judged Down while it was in fact alive.
/// </summary>
internal sealed class HostRegistrationService(
    IGrainFactory grains,
    HostDisk disk,
    IOptions<StorageServerOptions> options,
    ILocalSiloDetails silo,
    ILogger<HostRegistrationService> logger) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private Task _registration = Task.CompletedTask;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(HostRegistrationService), ServiceLifecycleStage.Active, OnStartAsync, OnStopAsync);

    private Task OnStartAsync(CancellationToken cancellationToken)
    {
        _registration = Task.Run(() => RegisterAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task OnStopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        await _registration.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    private async Task RegisterAsync(CancellationToken cancellationToken)
    {
        var hostId = options.Value.HostId;
        var gateway = silo.GatewayAddress?.Endpoint ?? silo.SiloAddress.Endpoint;
        var registered = false;
        var inMap = true;
        var management = grains.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey);
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                var registration = new HostRegistration(hostId, Capacity(), gateway.ToString(), disk.Superblock?.ClusterId ?? Guid.Empty);
                if (!registered)
                {
                    var map = await management.RegisterHostAsync(registration);
                    await grains.GetGrain<IStorageServerGrain>(hostId).GetStatusAsync();
                    Log.HostRegistered(logger, hostId, map.Epoch);
                    registered = true;
                }
                else if (inMap && !await management.RenewHostAsync(registration))
                {
                    inMap = false;
                    Log.HostRemoved(logger, hostId);
                }
                await Task.Delay(options.Value.RegistrationInterval, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                Log.HostRegistrationRetry(logger, ex, hostId);
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    public void Dispose() => _stopping.Dispose();

    private long Capacity()
    {
        if (options.Value.CapacityBytes > 0)
        {
            return options.Value.CapacityBytes;
        }
        var root = Path.GetPathRoot(Path.GetFullPath(options.Value.DataDirectory)) ?? "/";
        // The disk's size, not its free space: free space moves with every write and would
        // change the map (and its epoch) on each restart.
        return new DriveInfo(root).TotalSize;
    }
}
