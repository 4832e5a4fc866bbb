using System.Collections.Concurrent;
using OrleansStorage.Storage;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>Drops news of new epochs (pushes and lease answers) to chosen hosts, on purpose, and counts what it dropped.</summary>
public sealed class SwitchablePushFilter : IClusterMapPushFilter
{
    private readonly ConcurrentDictionary<string, int> _dropping = new();
    private readonly ConcurrentDictionary<string, int> _dropped = new();

    public void DropPushesTo(string hostId) => _dropping[hostId] = 1;

    public void DeliverAll() => _dropping.Clear();

    public int DroppedFor(string hostId) => _dropped.GetValueOrDefault(hostId);

    public ValueTask<bool> AcceptAsync(string hostId, long epoch)
    {
        if (_dropping.ContainsKey(hostId))
        {
            _dropped.AddOrUpdate(hostId, 1, (_, n) => n + 1);
            return ValueTask.FromResult(false);
        }
        return ValueTask.FromResult(true);
    }
}
