using System.Buffers;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// The payload memory of the whole NBD server: every write payload and read reply takes its
/// bytes here before it is buffered and gives them back when it is done, so no number of clients,
/// whatever they do, holds more than the budget. Freed bytes go to the smallest waiting request
/// first: clients that hold big payloads hostage (a write announced and never sent) cannot make
/// an honest small read wait behind them, only for the next release. Buffers come from a
/// pool of the server's own; when the last client leaves the pool is dropped and the memory given
/// back to the system, so a burst does not leave the process large.
/// </summary>
internal sealed class NbdMemoryBudget(long budgetBytes, int largestBuffer)
{
    private readonly Lock _lock = new();
    private readonly List<(long Bytes, TaskCompletionSource Granted)> _waiting = [];
    private long _used;

    public long BudgetBytes { get; } = budgetBytes;

    public long UsedBytes
    {
        get
        {
            lock (_lock)
            {
                return _used;
            }
        }
    }

    public ArrayPool<byte> Pool { get; private set; } = NewPool(largestBuffer);

    /// <summary>Waits until <paramref name="bytes"/> fit and takes them.</summary>
    public async ValueTask AcquireAsync(long bytes, CancellationToken cancellationToken)
    {
        if (bytes > BudgetBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), $"{bytes} bytes exceed the whole budget of {BudgetBytes}");
        }
        TaskCompletionSource granted;
        lock (_lock)
        {
            if (_used + bytes <= BudgetBytes)
            {
                _used += bytes;
                return;
            }
            granted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting.Add((bytes, granted));
        }
        try
        {
            await granted.Task.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // Granted in the meantime: hand the bytes back; else leave the queue (Release skips it).
            if (!granted.TrySetCanceled())
            {
                Release(bytes);
            }
            throw;
        }
    }

    public void Release(long bytes)
    {
        lock (_lock)
        {
            _used -= bytes;
            _waiting.RemoveAll(w => w.Granted.Task.IsCompleted); // cancelled while they waited
            while (_waiting.Count > 0)
            {
                var smallest = 0;
                for (var i = 1; i < _waiting.Count; i++)
                {
                    if (_waiting[i].Bytes < _waiting[smallest].Bytes)
                    {
                        smallest = i;
                    }
                }
                var next = _waiting[smallest];
                if (_used + next.Bytes > BudgetBytes)
                {
                    break;
                }
                _waiting.RemoveAt(smallest);
                if (next.Granted.TrySetResult())
                {
                    _used += next.Bytes;
                }
            }
        }
    }

    /// <summary>Drops the pool's buffers and returns free memory to the system; for when no client is connected.</summary>
    public void GiveBackMemory()
    {
        Pool = NewPool(largestBuffer);
        // Payload buffers live on the large object heap, which is not compacted unless asked:
        // its free gaps would stay resident.
        System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    private static ArrayPool<byte> NewPool(int largestBuffer) => ArrayPool<byte>.Create(largestBuffer, maxArraysPerBucket: 8);
}
