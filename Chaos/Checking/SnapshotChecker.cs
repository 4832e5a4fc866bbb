using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// Every snapshot holds exactly the writes acknowledged before its create was called and none
/// invoked after the create returned (the guarantee of <c>OstorClient.CreateSnapshotAsync</c>);
/// writes in between, and ambiguous ones, may be in it or not. Per block of the volume, what the
/// snapshot read after healing returned must be:
///   - not the value of a write invoked after the create returned ("out"), nor garbled;
///   - not older than any write acknowledged before the create was called ("in"): zeros when an
///     "in" write exists, or a value whose write returned before an "in" write was even invoked,
///     means the snapshot lacks an acknowledged write (after a power cut of every host, one a
///     flush had made durable).
/// </summary>
public static class SnapshotChecker
{
    /// <param name="cuts">
    /// The instants of power cuts of every host. A snapshot need not hold a write that no flush
    /// made durable before a cut that came after it: the cut may have taken it from the head
    /// segment before a copy for the snapshot was made.
    /// </param>
    public static List<Anomaly> Check(IReadOnlyList<Operation> history, Func<int, int> volumeOfBlock, IReadOnlyList<PowerCut>? cuts = null)
    {
        var anomalies = new List<Anomaly>();
        var flushes = history.Where(o => o.Kind == OperationKind.Flush && o.IsOk).ToList();
        bool SurvivesEveryCut(Operation write) =>
            (cuts ?? []).Where(cut => PowerCutEras.AnsweredBefore(write, cut)).All(cut =>
                flushes.Any(f => f.Client == write.Client && f.Volume == write.Volume && f.Invoked > write.Completed && PowerCutEras.AnsweredBefore(f, cut)));
        var writes = history.Where(o => o.Kind == OperationKind.Write).ToList();
        var byId = writes.ToDictionary(w => w.Write);
        foreach (var create in history.Where(o => o.Kind == OperationKind.SnapshotCreate && o.IsOk))
        {
            var reads = history.Where(o => o.Kind == OperationKind.Read && o.Snapshot == create.Snapshot && volumeOfBlock(o.Block) == create.Volume);
            foreach (var read in reads)
            {
                var blockWrites = writes.Where(w => w.Block == read.Block).ToList();
                var acknowledgedBefore = blockWrites.Where(w => w.IsOk && w.Completed < create.Invoked && SurvivesEveryCut(w)).ToList();
                string? wrong = null;
                var evidence = new List<Operation> { create, read };
                if (!read.IsOk)
                {
                    wrong = $"reading it after healing failed: {read.Error}";
                }
                else if (read.Read.Kind == ReadKind.Garbled)
                {
                    wrong = $"it returned {read.Read}";
                }
                else if (read.Read.Kind == ReadKind.Zeros)
                {
                    if (acknowledgedBefore.Count > 0)
                    {
                        wrong = $"it reads zeros, but {acknowledgedBefore[^1].Write} was acknowledged before the create was called";
                        evidence.Add(acknowledgedBefore[^1]);
                    }
                }
                else if (!byId.TryGetValue(read.Read.Id, out var held) || held.Block != read.Block)
                {
                    wrong = $"it holds {read.Read.Id}, never written to this block";
                }
                else if (held.Invoked > create.Completed)
                {
                    wrong = $"it holds {held.Write}, invoked at {RegisterChecker.Seconds(held.Invoked)}, after the create returned";
                    evidence.Add(held);
                }
                else if (held.IsOk && acknowledgedBefore.FirstOrDefault(w => w.Invoked > held.Completed) is { } missing)
                {
                    wrong = $"it holds {held.Write}, but {missing.Write}, written after it, was acknowledged before the create was called";
                    evidence.Add(held);
                    evidence.Add(missing);
                }
                if (wrong is not null)
                {
                    anomalies.Add(new("snapshot wrong", read.Block,
                        $"snapshot {create.Snapshot} (created {RegisterChecker.Seconds(create.Invoked)} .. {RegisterChecker.Seconds(create.Completed)}): {wrong}",
                        create.Invoked, create.Completed, evidence));
                }
            }
        }
        return anomalies;
    }
}
