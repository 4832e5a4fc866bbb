using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Maps;

namespace OrleansStorage.Client.Library;

/// <summary>How the client catches up with an epoch a host told it of (docs/epoch-protocol.md, "A client on an old map").</summary>
public sealed partial class OstorClient
{
    /// <summary>
    /// Brings the map to at least <paramref name="epoch"/>, which <paramref name="hostId"/> refused
    /// a request for being behind. The management service is asked first. When it answers with
    /// an older map, or not within a request timeout (an activation cut off from the database may
    /// still answer through a gateway that reaches it), the map is taken from the host that
    /// refused: it adopted that epoch only after management had persisted it, and it answers on its
    /// data port, where under TLS it proved with the cluster's certificates that it is a host.
    /// The cache takes only newer maps of this cluster, so no answer can move the client back.
    /// False when neither gave a map at <paramref name="epoch"/> (the caller retries later).
    /// </summary>
    internal async Task<bool> CatchUpAsync(long epoch, string hostId)
    {
        if (Maps.Current.Epoch >= epoch)
        {
            return true;
        }
        try
        {
            await Maps.RefreshAsync(epoch).WaitAsync(_options.RequestTimeout);
        }
        catch (Exception ex) when (ex is not (OperationCanceledException or ForeignClusterException))
        {
            // Management is failing over, refuses, or its answer is late: the host is asked.
        }
        if (Maps.Current.Epoch >= epoch)
        {
            return true;
        }
        try
        {
            Maps.Offer(await FetchAdoptedMapAsync(hostId));
        }
        catch (Exception ex) when (ex is not (OperationCanceledException or ForeignClusterException))
        {
            return false;
        }
        return Maps.Current.Epoch >= epoch;
    }

    /// <summary>The map a host adopted, over its data port (<see cref="DataOp.Map"/>).</summary>
    private async Task<ClusterMap> FetchAdoptedMapAsync(string hostId)
    {
        var map = Maps.Current;
        var request = new DataRequestHeader(DataOp.Map, 0, map.Epoch, Guid.Empty, 0, 0, 0, 0, false, 0);
        var bytes = await SendDataAsync(map, hostId, request) ?? throw new StorageException($"host '{hostId}' answered the map request with no map");
        var adopted = _cluster.ServiceProvider.GetRequiredService<Serializer>().Deserialize<ClusterMap>(bytes)
            ?? throw new StorageException($"host '{hostId}' answered the map request with no map");
        return adopted.Normalized();
    }
}
