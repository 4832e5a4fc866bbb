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

/// <summary>Makes a chosen host's fsyncs fail, on purpose, until told otherwise.</summary>
public sealed class SwitchableDiskFaults : Segments.IDiskFaults
{
    private readonly ConcurrentDictionary<string, bool> _failing = new();

    public void FailFsyncOn(string hostId) => _failing[hostId] = true;

    public void Heal(string hostId) => _failing.TryRemove(hostId, out _);

    public bool FailsFsync(string hostId, string path) => _failing.ContainsKey(hostId);
}
