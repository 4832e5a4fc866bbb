using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Serialization;
using OrleansStorage.Auth;
using OrleansStorage.DataPort;
using OrleansStorage.Files;
using OrleansStorage.Identity;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Placement;
using OrleansStorage.Qos;
using OrleansStorage.Segments;
using OrleansStorage.Storage;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Hosting;

public static class StorageSiloBuilderExtensions
{
    /// <summary>Silo metadata key under which each silo announces when it started (Unix milliseconds).</summary>
    public const string SiloStartedMetadataKey = "ostor.started";

    /// <summary>
    /// Makes this silo an OrleansStorage host: announces its HostId in silo metadata, pins storage
    /// servers to their hosts, registers the map stream, the data directory (checked before the silo
    /// starts), the segment store and host registration. The caller registers the grain storages
    /// named in <see cref="StorageNames"/>, an <see cref="IClusterIdentityStore"/> and clustering.
    /// </summary>
    public static ISiloBuilder AddOrleansStorageHost(this ISiloBuilder silo, Action<StorageServerOptions> configureStorage)
    {
        var storage = new StorageServerOptions();
        configureStorage(storage);
        silo.UseSiloMetadata(new Dictionary<string, string>
        {
            [HostPinnedPlacementDirector.HostIdMetadataKey] = storage.HostId,
            [SiloStartedMetadataKey] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture),
        });
        silo.AddPlacementDirector<HostPinnedPlacement, HostPinnedPlacementDirector>();
        silo.AddMemoryStreams(ClusterMapStream.ProviderName);

        var services = silo.Services;
        services.AddOptions<StorageServerOptions>().Configure(configureStorage).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<ManagementOptions>().ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<IValidateOptions<ManagementOptions>, ManagementOptionsValidator>();
        services.AddOptions<LeaseOptions>().ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<IValidateOptions<LeaseOptions>, LeaseOptionsValidator>();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp =>
        {
            var storage = sp.GetRequiredService<IOptions<StorageServerOptions>>().Value;
            return new HostDisk(storage.DataDirectory, storage.HostId, sp.GetRequiredService<Serializer>());
        });
        services.AddSingleton<DataDirectoryCheck>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<DataDirectoryCheck>());
        services.AddSingleton(sp =>
        {
            var disk = sp.GetRequiredService<HostDisk>();
            if (!disk.IsOpen)
            {
                throw new InvalidOperationException($"the data directory '{disk.Root}' was not checked before use");
            }
            var faults = sp.GetRequiredService<IDiskFaults>();
            var storage = sp.GetRequiredService<IOptions<StorageServerOptions>>().Value;
            if (storage.RecordDurableImage)
            {
                var image = new DurableImage(Path.Combine(disk.Root, StorageServerOptions.DurableImageFolderName));
                var volumes = Path.Combine(disk.Root, HostDisk.VolumesFolderName);
                // A test that killed this host asked for a power cut: what the page cache held is lost.
                var powerCut = Path.Combine(disk.Root, StorageServerOptions.DurableImageFolderName, DurableImage.PowerCutFileName);
                var cut = File.Exists(powerCut) && image.HasBaseline && Directory.Exists(volumes);
                if (cut)
                {
                    var changed = image.Restore(volumes);
                    Log.PowerCutRestored(sp.GetRequiredService<ILogger<DurableImage>>(), disk.HostId, changed);
                }
                // After a power cut what is on disk is durable; after a mere kill the page cache
                // survived and what it held still is not, so the image of the last start goes on.
                if (cut || !image.HasBaseline)
                {
                    image.Baseline(volumes);
                }
                // Only now: a kill before the baseline leaves the cut to be made again, on the same image.
                File.Delete(powerCut);
                return new SegmentStore(disk.Root, storage.MaxOpenSegmentFiles, path =>
                {
                    if (image.FailsFsync)
                    {
                        return true;
                    }
                    image.Synced(path);
                    return faults.FailsFsync(disk.HostId, path);
                });
            }
            return new SegmentStore(disk.Root, storage.MaxOpenSegmentFiles, path => faults.FailsFsync(disk.HostId, path));
        });
        services.TryAddSingleton<IClusterMapPushFilter, AcceptAllPushes>();
        services.TryAddSingleton<IReplicaWriteFaults, NoReplicaWriteFaults>();
        services.TryAddSingleton<IDiskFaults, NoDiskFaults>();
        services.AddSingleton<RecoveryLog>();
        // What this silo measures (docs/monitoring.md); exported only where an exporter listens (the silo's /metrics).
        services.AddMetrics();
        services.AddSingleton<DataPathMetrics>();
        services.AddSingleton<HostMetrics>();
        services.AddSingleton<ManagementMetrics>();
        services.AddSingleton(sp => new VolumeQosGate(sp.GetRequiredService<IOptions<StorageServerOptions>>().Value.HostId, sp.GetRequiredService<TimeProvider>()));
        // Off unless the silo has the cluster's certificates (AddAccessControl).
        services.TryAddSingleton(sp => new AccessControl(sp.GetRequiredService<ILogger<AccessControl>>()));
        services.AddSingleton<DataPortServer>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<DataPortServer>());
        services.AddSingleton(sp =>
        {
            // A primary's forwards to its replicas: with the cluster's certificates, mutual TLS and this host's ticket.
            var tls = sp.GetService<DataPortServerTls>();
            var access = sp.GetRequiredService<AccessControl>();
            var security = tls is null ? null : new DataPortSecurity(tls.Identity, tls.Trust, access.HostTicket);
            var storage = sp.GetRequiredService<IOptions<StorageServerOptions>>().Value;
            return new DataPortClient(security, storage.ForwardTimeout, TimeSpan.FromSeconds(5));
        });
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, HostRegistrationService>();
        return silo;
    }
}

internal sealed class ManagementOptionsValidator : IValidateOptions<ManagementOptions>
{
    public ValidateOptionsResult Validate(string? name, ManagementOptions options) =>
        (options.SegmentSizeBytes & (options.SegmentSizeBytes - 1)) != 0
            ? ValidateOptionsResult.Fail($"Management:SegmentSizeBytes is {options.SegmentSizeBytes}; it must be a power of two")
            : ValidateOptionsResult.Success;
}

internal sealed class LeaseOptionsValidator : IValidateOptions<LeaseOptions>
{
    public ValidateOptionsResult Validate(string? name, LeaseOptions options) =>
        options.Problem() is { } problem ? ValidateOptionsResult.Fail(problem) : ValidateOptionsResult.Success;
}
