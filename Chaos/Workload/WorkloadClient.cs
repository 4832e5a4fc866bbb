using OrleansStorage.Chaos.History;
using OrleansStorage.Client.Library;

namespace OrleansStorage.Chaos.Workload;

/// <summary>
/// One client of the workload, on its own connection (so its flushes cover its own writes):
/// one operation at a time, each chosen by its <see cref="Random"/> (a write of a fresh unique
/// value to a block, a read of a block, or a flush of a volume), every one recorded with the
/// moment it was invoked, the moment it returned and what came of it.
/// </summary>
public sealed class WorkloadClient(int id, IReadOnlyList<VolumeHandle> volumes, BlockLayout layout,
    HistoryRecorder history, Random random, int runTag, TimeSpan operationTimeout)
{
    private long _sequence;

    public int Id => id;

    public async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var roll = random.Next(100);
            var block = random.Next(layout.Blocks);
            if (roll < 50)
            {
                await WriteAsync(block);
            }
            else if (roll < 92)
            {
                await ReadAsync(block, final: false);
            }
            else
            {
                await FlushAsync(random.Next(volumes.Count));
            }
            // A little air between operations: the cluster shares two cores with the clients.
            await Task.Delay(random.Next(1, 10), CancellationToken.None);
        }
    }

    public Task WriteAsync(int block)
    {
        var value = new WriteId(id, ++_sequence);
        var bytes = BlockValue.Encode(runTag, value, block);
        return RecordAsync(OperationKind.Write, block, layout.VolumeOf(block), value, ct => volumes[layout.VolumeOf(block)].WriteAsync(layout.OffsetOf(block), bytes, cancellationToken: ct));
    }

    public Task ReadAsync(int block, bool final)
    {
        var bytes = new byte[BlockValue.Size];
        return RecordAsync(OperationKind.Read, block, layout.VolumeOf(block), default,
            ct => volumes[layout.VolumeOf(block)].ReadAsync(layout.OffsetOf(block), bytes, ct), () => BlockValue.Decode(bytes, runTag, block), final);
    }

    /// <summary>A read of the block in a snapshot of its volume, through <paramref name="snapshot"/> (opened as <c>VOL@SNAP</c>).</summary>
    public Task ReadSnapshotAsync(VolumeHandle snapshot, int block)
    {
        var bytes = new byte[BlockValue.Size];
        return RecordAsync(OperationKind.Read, block, layout.VolumeOf(block), default,
            ct => snapshot.ReadAsync(layout.OffsetOf(block), bytes, ct), () => BlockValue.Decode(bytes, runTag, block), final: true, snapshot.Snapshot!.Name);
    }

    public Task FlushAsync(int volume) =>
        RecordAsync(OperationKind.Flush, -1, volume, default, ct => volumes[volume].FlushAsync(ct));

    private async Task RecordAsync(OperationKind kind, int block, int volume, WriteId write, Func<CancellationToken, Task> call, Func<BlockRead>? decode = null, bool final = false, string? snapshot = null)
    {
        using var deadline = new CancellationTokenSource(operationTimeout);
        var invoked = history.Now;
        Outcome outcome;
        string? error = null;
        using var attempts = WriteAttempts.Count();
        try
        {
            await call(deadline.Token);
            outcome = Outcome.Ok;
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            outcome = Outcome.TimedOut;
        }
        catch (Exception ex)
        {
            outcome = Outcome.Failed;
            error = $"{ex.GetType().Name}: {ex.Message.Split('\n')[0]}";
        }
        var completed = history.Now;
        var read = outcome == Outcome.Ok && decode is not null ? decode() : default;
        history.Add(new Operation(history.NextId(), id, kind, volume, block, invoked, completed, outcome, write, read, error, final, snapshot, Math.Max(1, attempts.Sent)));
    }

    public static async Task<OstorClient> ConnectAsync(string pki, IEnumerable<string> gateways, TimeSpan retryTimeout)
    {
        var options = new OstorClientOptions { PkiDirectory = pki, RetryTimeout = retryTimeout, ConnectTimeout = TimeSpan.FromSeconds(30) };
        options.Gateways.Clear();
        foreach (var gateway in gateways)
        {
            options.Gateways.Add(gateway);
        }
        return await OstorClient.ConnectAsync(options);
    }
}
