using OrleansStorage.Errors;
using OrleansStorage.Maps;

namespace OrleansStorage.Client.Library;

/// <summary>
/// The client's copy of the cluster map. It only moves forward, and only with maps the management
/// service handed out (pulls, and answers to administration requests); a push from the stream just
/// triggers a pull. A pull is shared by every request that needs one at the same time. Maps of
/// another cluster than the first one seen are refused.
/// </summary>
public sealed class ClusterMapCache(Func<Task<ClusterMap>> fetch)
{
    private readonly Lock _gate = new();
    private ClusterMap _current = ClusterMap.Empty;
    private Task<ClusterMap>? _pull;

    public ClusterMap Current
    {
        get
        {
            lock (_gate)
            {
                return _current;
            }
        }
    }

    /// <summary>Takes <paramref name="map"/> if it is newer than the current one.</summary>
    public void Offer(ClusterMap map)
    {
        lock (_gate)
        {
            if (!_current.IsUnformed && map.ClusterId != _current.ClusterId)
            {
                throw new ForeignClusterException($"the cluster answered with a map of cluster {map.ClusterId}; this client works with cluster {_current.ClusterId}");
            }
            if (map.Epoch > _current.Epoch)
            {
                _current = map;
            }
        }
    }

    /// <summary>Pulls the map from the management service unless the cache is already at <paramref name="atLeastEpoch"/>.</summary>
    public async Task<ClusterMap> RefreshAsync(long atLeastEpoch = long.MaxValue)
    {
        Task<ClusterMap> pull;
        lock (_gate)
        {
            if (_current.Epoch >= atLeastEpoch)
            {
                return _current;
            }
            if (_pull is null || _pull.IsCompleted)
            {
                _pull = fetch();
            }
            pull = _pull;
        }
        Offer(await pull.ConfigureAwait(false));
        return Current;
    }
}
