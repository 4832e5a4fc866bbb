using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;
using OrleansStorage.Errors;
using OrleansStorage.Hosting;
using OrleansStorage.Logging;

namespace OrleansStorage.Placement;

/// <summary>Places a grain keyed by HostId on the silo started with that HostId, and nowhere else.</summary>
[GenerateSerializer, Immutable, Alias("ostor.HostPinnedPlacement")]
public sealed class HostPinnedPlacement : PlacementStrategy
{
    public static HostPinnedPlacement Instance { get; } = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class HostPinnedPlacementAttribute() : PlacementAttribute(HostPinnedPlacement.Instance);

/// <summary>
/// Finds, among the compatible silos, the one whose silo metadata carries the grain's HostId.
/// The metadata cache fills asynchronously from membership, so while some silo's HostId is not
/// known yet the director waits a little; a host with no live silo fails the activation at once
/// with a clear error.
/// </summary>
public sealed class HostPinnedPlacementDirector(
    ISiloMetadataCache metadata,
    IOptions<StorageServerOptions> options,
    ILogger<HostPinnedPlacementDirector> logger) : IPlacementDirector
{
    /// <summary>Silo metadata key under which each silo announces its HostId.</summary>
    public const string HostIdMetadataKey = "ostor.host-id";

    public async Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var hostId = target.GrainIdentity.Key.ToString()!;
        var deadline = DateTime.UtcNow + options.Value.PinnedActivationWait;
        while (true)
        {
            var metadataPending = false;
            foreach (var silo in context.GetCompatibleSilos(target))
            {
                var siloMetadata = metadata.GetSiloMetadata(silo);
                if (!siloMetadata.Metadata.TryGetValue(HostIdMetadataKey, out var siloHostId))
                {
                    metadataPending = true; // a silo that just joined: its HostId is still on the way
                }
                else if (string.Equals(siloHostId, hostId, StringComparison.Ordinal))
                {
                    return silo;
                }
            }
            // Waiting helps only while some silo's HostId is unknown; when every live silo is
            // known to be another host, this one is down and callers must learn it now.
            if (!metadataPending || DateTime.UtcNow >= deadline)
            {
                const string reason = "no live silo was started with this HostId";
                Log.PinFailed(logger, hostId, reason);
                throw new HostUnavailableException(hostId, reason);
            }
            await Task.Delay(TimeSpan.FromMilliseconds(200));
        }
    }
}
