using OrleansStorage.Maps;

namespace OrleansStorage.Client.Library;

/// <summary>
/// The client's copy of the cluster map. It only moves forward: pushes from the stream and
/// pulls from the management service are both offered, and the newest wins. A pull is shared by
/// every request that needs one at the same time.
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
