using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// What must hold after every fault was healed, from the final reads (one per block, by a fresh
/// client): every block can be read, and every write acknowledged before its client's
/// acknowledged flush of that volume was invoked is still there or was superseded by a write
/// that may have taken effect after it (any write that did not return before it was invoked).
/// A block holding zeros, or the value of a write that returned before the flushed write was
/// even invoked, lost it. The same holds for what each block shows first after a power cut of
/// every host, which may lose unflushed writes but never flushed ones (<see cref="PowerCutEras"/>).
/// </summary>
public static class DurabilityChecker
{
    /// <param name="cuts">The power cuts of every host, in order (<see cref="PowerCutEras"/>).</param>
    public static List<Anomaly> Check(IReadOnlyList<Operation> history, IEnumerable<int> blocks, IReadOnlyList<PowerCut>? cuts = null)
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
        var instants = (cuts ?? []).ToList();
        CheckFlushedWritesSurvive(history, writes, instants, _ => true, block => finals.GetValueOrDefault(block) is { IsOk: true } final ? final : null, "after healing", anomalies);

        // A power cut of every host may lose what was not flushed, never what was: what each block
        // shows first after the cut must not be older than a write flushed before it.
        var byBlock = history.Where(o => o.Block >= 0 && o.Kind is OperationKind.Write or OperationKind.Read && o.Snapshot is null).GroupBy(o => o.Block).ToDictionary(g => g.Key, g => g.ToList());
        for (var i = 0; i < instants.Count; i++)
        {
            var cut = instants[i];
            var next = i + 1 < instants.Count ? instants[i + 1] : null;
            var survivors = byBlock.ToDictionary(b => b.Key, b => PowerCutEras.Survivor(PowerCutEras.Era(b.Value, cut, next)));
            CheckFlushedWritesSurvive(history, writes, instants, flush => PowerCutEras.AnsweredBefore(flush, cut), block => survivors.GetValueOrDefault(block),
                $"after the power cut of every host at {RegisterChecker.Seconds(cut.Cut)}", anomalies);
        }
        return anomalies;
    }

    /// <summary>
    /// Every write acknowledged before an acknowledged flush (of its client and volume) that
    /// <paramref name="counts"/> is what <paramref name="shownBy"/> shows for its block, or was
    /// superseded by a write that may have taken effect after it. A flush covers no write that a
    /// power cut of every host came between: the cut may have taken it before the flush was sent.
    /// </summary>
    private static void CheckFlushedWritesSurvive(IReadOnlyList<Operation> history, Dictionary<WriteId, Operation> writes, IReadOnlyList<PowerCut> cuts,
        Func<Operation, bool> counts, Func<int, Operation?> shownBy, string when, List<Anomaly> anomalies)
    {
        var checkedWrites = new HashSet<WriteId>();
        foreach (var flush in history.Where(o => o.Kind == OperationKind.Flush && o.IsOk && counts(o)).OrderBy(o => o.Invoked))
        {
            var covered = writes.Values.Where(w => w.IsOk && w.Client == flush.Client && w.Volume == flush.Volume && w.Completed < flush.Invoked
                && cuts.All(cut => !PowerCutEras.AnsweredBefore(w, cut) || PowerCutEras.AnsweredBefore(flush, cut)));
            foreach (var write in covered)
            {
                if (!checkedWrites.Add(write.Write) || shownBy(write.Block) is not { } shown)
                {
                    continue;
                }
                var survivor = shown.Read;
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
                    var evidence = new List<Operation> { write, flush, shown };
                    if (survivor.Kind == ReadKind.Value && writes.TryGetValue(survivor.Id, out var holder))
                    {
                        evidence.Add(holder);
                    }
                    anomalies.Add(new("lost flushed write", write.Block,
                        $"{write.Write} was acknowledged at {RegisterChecker.Seconds(write.Completed)} and flushed by {RegisterChecker.Seconds(flush.Completed)}, but {when} {lost}",
                        write.Invoked, shown.Completed, evidence));
                }
            }
        }
    }
}
