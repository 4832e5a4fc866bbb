using System.Collections.Concurrent;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>Makes a chosen live host fail or refuse its next forwarded writes, or hold them, or hold a primary's fill, on purpose.</summary>
public sealed class SwitchableReplicaFaults : IReplicaWriteFaults
{
    private readonly ConcurrentDictionary<string, int> _remaining = new();
    private readonly ConcurrentDictionary<string, ReplicaWriteFault> _kind = new();
    private readonly ConcurrentDictionary<(string, SegmentAddress), TaskCompletionSource> _fillHolds = new();
    private readonly ConcurrentDictionary<(string, SegmentAddress), TaskCompletionSource> _fillHeld = new();
    private readonly ConcurrentDictionary<(string, SegmentAddress), TaskCompletionSource> _holds = new();
    private readonly ConcurrentDictionary<(string, SegmentAddress), TaskCompletionSource> _held = new();

    /// <summary>
    /// Holds the host's next forwarded writes to the segment after admission, before the write
    /// turn, until <see cref="Release"/>. Returns a task that completes once one is held.
    /// </summary>
    public Task Hold(string hostId, SegmentAddress segment)
    {
        _holds[(hostId, segment)] = new(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _held[(hostId, segment)] = held;
        return held.Task;
    }

    public void Release(string hostId, SegmentAddress segment)
    {
        if (_holds.TryRemove((hostId, segment), out var hold))
        {
            hold.TrySetResult();
        }
    }

    public async ValueTask BeforeWriteTurnAsync(string hostId, SegmentAddress segment)
    {
        if (_holds.TryGetValue((hostId, segment), out var hold))
        {
            if (_held.TryGetValue((hostId, segment), out var held))
            {
                held.TrySetResult();
            }
            await hold.Task;
        }
    }

    /// <summary>
    /// Holds the fill that <paramref name="sourceHostId"/> runs as a primary before it goes over
    /// <paramref name="segment"/>, until <see cref="ReleaseFill"/>. Returns a task that completes once it is held.
    /// </summary>
    public Task HoldFill(string sourceHostId, SegmentAddress segment)
    {
        _fillHolds[(sourceHostId, segment)] = new(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _fillHeld[(sourceHostId, segment)] = held;
        return held.Task;
    }

    public void ReleaseFill(string sourceHostId, SegmentAddress segment)
    {
        if (_fillHolds.TryRemove((sourceHostId, segment), out var hold))
        {
            hold.TrySetResult();
        }
    }

    public async ValueTask BeforeFillSegmentAsync(string sourceHostId, SegmentAddress segment)
    {
        if (_fillHolds.TryGetValue((sourceHostId, segment), out var hold))
        {
            if (_fillHeld.TryGetValue((sourceHostId, segment), out var held))
            {
                held.TrySetResult();
            }
            await hold.Task;
        }
    }

    public void FailNext(string hostId, int writes) => FaultNext(hostId, writes, ReplicaWriteFault.Fail);

    /// <summary>The host's next <paramref name="writes"/> forwarded writes fail as <paramref name="fault"/> says.</summary>
    public void FaultNext(string hostId, int writes, ReplicaWriteFault fault)
    {
        _kind[hostId] = fault;
        _remaining[hostId] = writes;
    }

    public int Remaining(string hostId) => _remaining.GetValueOrDefault(hostId);

    public ReplicaWriteFault NextFault(string hostId)
    {
        while (_remaining.TryGetValue(hostId, out var left) && left > 0)
        {
            if (_remaining.TryUpdate(hostId, left - 1, left))
            {
                return _kind.GetValueOrDefault(hostId, ReplicaWriteFault.Fail);
            }
        }
        return ReplicaWriteFault.None;
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
