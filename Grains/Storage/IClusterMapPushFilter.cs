namespace OrleansStorage.Storage;

/// <summary>
/// Decides whether a storage server takes news that the map moved on to <c>epoch</c>: a push on
/// the map stream, or a lease answer naming a newer epoch. Production takes all; tests drop news
/// on purpose to prove that lost pushes cost latency, never data, and that a primary that never
/// hears of its deposition stops serving when its lease runs out.
/// </summary>
public interface IClusterMapPushFilter
{
    ValueTask<bool> AcceptAsync(string hostId, long epoch);
}

public sealed class AcceptAllPushes : IClusterMapPushFilter
{
    public ValueTask<bool> AcceptAsync(string hostId, long epoch) => ValueTask.FromResult(true);
}
