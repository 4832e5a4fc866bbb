using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

/// <summary>
/// Decides whether a storage server takes a map pushed to it. Production accepts every push;
/// tests drop or delay pushes on purpose to prove that lost pushes cost latency, never data.
/// </summary>
public interface IClusterMapPushFilter
{
    ValueTask<bool> AcceptAsync(string hostId, ClusterMap map);
}

public sealed class AcceptAllPushes : IClusterMapPushFilter
{
    public ValueTask<bool> AcceptAsync(string hostId, ClusterMap map) => ValueTask.FromResult(true);
}
