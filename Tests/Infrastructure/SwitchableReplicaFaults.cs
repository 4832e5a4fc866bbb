using System.Collections.Concurrent;
using OrleansStorage.Storage;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>Makes a chosen live host fail its next forwarded writes, on purpose.</summary>
public sealed class SwitchableReplicaFaults : IReplicaWriteFaults
{
    private readonly ConcurrentDictionary<string, int> _remaining = new();

    public void FailNext(string hostId, int writes) => _remaining[hostId] = writes;

    public int Remaining(string hostId) => _remaining.GetValueOrDefault(hostId);

    public bool ShouldFail(string hostId)
    {
        while (_remaining.TryGetValue(hostId, out var left) && left > 0)
        {
            if (_remaining.TryUpdate(hostId, left - 1, left))
            {
                return true;
            }
        }
        return false;
    }
}
