using System.Collections.Concurrent;

namespace OrleansStorage.Chaos.History;

/// <summary>
/// Every operation of a run, recorded by the clients as they complete, on one clock: the elapsed
/// time since the recorder was made, from an injected <see cref="TimeProvider"/>. The workload
/// takes a timestamp before it calls and one after the call returns, so the recorded interval
/// always contains the moment the operation took effect.
/// </summary>
public sealed class HistoryRecorder(TimeProvider time)
{
    private readonly long _start = time.GetTimestamp();
    private readonly ConcurrentQueue<Operation> _operations = new();
    private long _nextId;

    public TimeSpan Now => time.GetElapsedTime(_start);

    public int Count => _operations.Count;

    public long NextId() => Interlocked.Increment(ref _nextId);

    public void Add(Operation operation) => _operations.Enqueue(operation);

    /// <summary>Every operation so far, in the order they were invoked.</summary>
    public IReadOnlyList<Operation> Snapshot() => [.. _operations.OrderBy(o => o.Invoked).ThenBy(o => o.Id)];
}
