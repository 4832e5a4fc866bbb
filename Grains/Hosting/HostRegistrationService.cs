using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansStorage.DataPort;
using OrleansStorage.Identity;
using OrleansStorage.Logging;
using OrleansStorage.Management;
using OrleansStorage.Segments;
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
    IServiceProvider services,
    IOptions<StorageServerOptions> options,
    ILocalSiloDetails silo,
    DataPortServer dataPort,
    ILogger<HostRegistrationService> logger) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource<string> _diskFailed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _registration = Task.CompletedTask;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(HostRegistrationService), ServiceLifecycleStage.Active, OnStartAsync, OnStopAsync);

    private Task OnStartAsync(CancellationToken cancellationToken)
    {
        // Resolved only now: the store opens the data directory, which the start-up check has locked by this stage.
        var store = services.GetRequiredService<SegmentStore>();
        store.Failed += reason => _diskFailed.TrySetResult(reason);
        if (store.Failure is { } failure)
        {
            _diskFailed.TrySetResult(failure);
        }
        _registration = Task.Run(async () =>
        {
            await RegisterAsync(_stopping.Token);
            await ReportDiskFailureAsync(_stopping.Token);
        }, CancellationToken.None);
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
        while (!cancellationToken.IsCancellationRequested && !_diskFailed.Task.IsCompleted)
        {
            try
            {
                var registration = new HostRegistration(hostId, Capacity(), gateway.ToString(), disk.Superblock?.ClusterId ?? Guid.Empty, NearFull(), dataPort.Endpoint);
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
                await Task.WhenAny(Task.Delay(options.Value.RegistrationInterval, cancellationToken), _diskFailed.Task);
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                Log.HostRegistrationRetry(logger, ex, hostId);
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    /// <summary>
    /// Fail-stop: once the disk failed, this host never checks in again (a check-in would bring it
    /// back Up); it tells management, which takes it Out, until that is heard.
    /// </summary>
    private async Task ReportDiskFailureAsync(CancellationToken cancellationToken)
    {
        if (!_diskFailed.Task.IsCompleted)
        {
            return;
        }
        var hostId = options.Value.HostId;
        var reason = await _diskFailed.Task;
        Log.HostFailStop(logger, hostId, reason);
        var management = grains.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey);
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await management.HostFailedAsync(hostId, reason);
                return;
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                Log.HostFailStopReportRetry(logger, ex, hostId);
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    public void Dispose() => _stopping.Dispose();

    /// <summary>
    /// Whether what this host offers is used at or above the near-full ratio: the configured
    /// capacity by our segment files, or else the data directory's file system by anything.
    /// </summary>
    private bool NearFull()
    {
        var ratio = options.Value.NearFullRatio;
        return options.Value.CapacityBytes > 0
            ? services.GetRequiredService<SegmentStore>().Usage().BytesUsed >= ratio * options.Value.CapacityBytes
            : disk.FilesystemUsedFraction >= ratio;
    }

    private long Capacity()
    {
        if (options.Value.CapacityBytes > 0)
        {
            return options.Value.CapacityBytes;
        }
        // The disk's size, not its free space: free space moves with every write and would
        // change the map (and its epoch) on each restart.
        return disk.FilesystemSize;
    }
}
