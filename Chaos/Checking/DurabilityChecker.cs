using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// What must hold after every fault was healed, from the final reads (one per block, by a fresh
/// client): every block can be read, and every write acknowledged before its client's
/// acknowledged flush of that volume was invoked is still there or was superseded by a write
/// that may have taken effect after it (any write that did not return before it was invoked).
/// A block holding zeros, or the value of a write that returned before the flushed write was
/// even invoked, lost it. Without power cuts the register check already covers this; the
/// property is kept apart because a power cut may lose unflushed writes but never flushed ones.
/// </summary>
public static class DurabilityChecker
{
    public static List<Anomaly> Check(IReadOnlyList<Operation> history, IEnumerable<int> blocks)
    {
        var anomalies = new List<Anomaly>();
        var finals = history.Where(o => o.Final && o.Kind == OperationKind.Read && o.Snapshot is null).GroupBy(o => o.Block)
            .ToDictionary(g => g.Key, g => g.Where(o => o.IsOk).OrderBy(o => o.Completed).LastOrDefault() ?? g.Last());
        foreach (var block in blocks)
        {
            if (!finals.TryGetValue(block, out var final))
            {
                anomalies.Add(new("not read after healing", block, "no final read was made", TimeSpan.Zero, TimeSpan.Zero, []));
            }
            else if (!final.IsOk)
            {
                anomalies.Add(new("unreadable after healing", block, $"the final read failed: {final.Error}", final.Invoked, final.Completed, [final]));
            }
        }

        var writes = history.Where(o => o.Kind == OperationKind.Write).ToDictionary(o => o.Write);
        var checkedWrites = new HashSet<WriteId>();
        foreach (var flush in history.Where(o => o.Kind == OperationKind.Flush && o.IsOk).OrderBy(o => o.Invoked))
        {
            var covered = writes.Values.Where(w => w.IsOk && w.Client == flush.Client && w.Volume == flush.Volume && w.Completed < flush.Invoked);
            foreach (var write in covered)
            {
                if (!checkedWrites.Add(write.Write) || !finals.TryGetValue(write.Block, out var final) || !final.IsOk)
                {
                    continue;
                }
                var survivor = final.Read;
                string? lost = survivor.Kind switch
                {
                    ReadKind.Zeros => "the block reads zeros",
                    ReadKind.Value when survivor.Id == write.Write => null,
                    ReadKind.Value when writes.TryGetValue(survivor.Id, out var older) && older.IsOk && older.Completed < write.Invoked =>
                        $"the block holds {older.Write}, acknowledged at {RegisterChecker.Seconds(older.Completed)}, before {write.Write} was invoked",
                    _ => null, // superseded, or garbled (which the register check reports)
                };
                if (lost is not null)
                {
                    var evidence = new List<Operation> { write, flush, final };
                    if (survivor.Kind == ReadKind.Value && writes.TryGetValue(survivor.Id, out var holder))
                    {
                        evidence.Add(holder);
                    }
                    anomalies.Add(new("lost flushed write", write.Block,
                        $"{write.Write} was acknowledged at {RegisterChecker.Seconds(write.Completed)} and flushed by {RegisterChecker.Seconds(flush.Completed)}, but after healing {lost}",
                        write.Invoked, final.Completed, evidence));
                }
            }
        }
        return anomalies;
    }
}
