using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Streams;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Management;

/// <summary>
/// The management service. Mutations run one at a time (the grain is not reentrant): each
/// computes the next map, persists it (epoch + 1) and only then publishes it. Reads of the map
/// and mismatch reports interleave with them and see the last persisted map.
/// </summary>
[GrainType("ostor-management")]
public sealed class ManagementGrain(
    [PersistentState("cluster", StorageNames.ClusterStore)] IPersistentState<ManagementState> state,
    IOptions<ManagementOptions> options,
    ILogger<ManagementGrain> logger) : Grain, IManagementServiceGrain
{
    private readonly ClusterMapTransitions _transitions = new(options.Value);
    private readonly Dictionary<string, long> _mismatchReports = new(StringComparer.Ordinal);
    private IAsyncStream<ClusterMap>? _stream;

    private ClusterMap Map => state.State.Map;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _stream = this.GetStreamProvider(ClusterMapStream.ProviderName)
            .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
        Log.ManagementActivated(logger, Map.Epoch, Map.Hosts.Length, Map.Volumes.Length);
        return Task.CompletedTask;
    }

    public async Task<ClusterMap> RegisterHostAsync(HostRegistration registration)
    {
        await CommitAsync(_transitions.RegisterHost(Map, registration), $"host '{registration.HostId}' registered at {registration.Endpoint}");
        return Map;
    }

    public async Task<VolumeInfo> CreateVolumeAsync(string name, long sizeBytes, int replicationFactor)
    {
        var next = _transitions.CreateVolume(Map, Guid.NewGuid(), name, sizeBytes, replicationFactor);
        await CommitAsync(next, $"volume '{name}' created ({sizeBytes} bytes, factor {replicationFactor})");
        return Map.FindVolume(name)!;
    }

    public async Task<VolumeInfo> ResizeVolumeAsync(string name, long newSizeBytes)
    {
        await CommitAsync(_transitions.ResizeVolume(Map, name, newSizeBytes), $"volume '{name}' resized to {newSizeBytes} bytes");
        return Map.FindVolume(name)!;
    }

    public async Task DeleteVolumeAsync(string name)
    {
        var volume = Map.FindVolume(name);
        await CommitAsync(_transitions.DeleteVolume(Map, name), $"volume '{name}' deleted");
        // The map change alone makes every server drop the files when it applies it; removing them
        // now makes deletion immediate for the hosts that are up.
        var hosts = volume!.PlacementGroups.SelectMany(pg => pg.Replicas).Distinct().ToList();
        await Task.WhenAll(hosts.Select(async hostId =>
        {
            try
            {
                await GrainFactory.GetGrain<IStorageServerGrain>(hostId).PurgeVolumeAsync(volume.VolumeId, Map.Epoch);
            }
            catch (Exception ex)
            {
                Log.PurgeFailed(logger, ex, volume.VolumeId, hostId);
            }
        }));
    }

    public Task<ClusterMap> GetMapAsync() => Task.FromResult(Map);

    public Task<IReadOnlyList<HostReport>> GetHostsAsync() =>
        Task.FromResult<IReadOnlyList<HostReport>>(
            Map.Hosts.Select(h => new HostReport(h, _mismatchReports.GetValueOrDefault(h.HostId))).ToList());

    public Task ReportMismatchAsync(EpochMismatch mismatch)
    {
        Log.MismatchReported(logger, mismatch.ReportingHostId, mismatch.ServerEpoch, mismatch.RequestEpoch, Map.Epoch);
        _mismatchReports[mismatch.ReportingHostId] = _mismatchReports.GetValueOrDefault(mismatch.ReportingHostId) + 1;
        if (mismatch.ServerEpoch < Map.Epoch && Map.FindHost(mismatch.ReportingHostId) is not null)
        {
            // The reporting server is behind: send it the current map directly, not waiting for a push.
            GrainFactory.GetGrain<IStorageServerGrain>(mismatch.ReportingHostId).ApplyMapAsync(Map).Ignore();
        }
        return Task.CompletedTask;
    }

    /// <summary>Persist, then publish. A map equal to the current one is no change and is not written.</summary>
    private async Task CommitAsync(ClusterMap next, string change)
    {
        if (next.Epoch == Map.Epoch)
        {
            return;
        }
        var previous = state.State.Map;
        state.State.Map = next;
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            state.State.Map = previous;
            throw;
        }
        Log.MapChanged(logger, next.Epoch, change);
        try
        {
            await _stream!.OnNextAsync(next);
        }
        catch (Exception ex)
        {
            Log.PublishFailed(logger, ex, next.Epoch);
        }
    }
}
