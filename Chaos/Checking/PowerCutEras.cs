using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// A power cut of every host at once may lose what no flush made durable: a block device with a
/// volatile cache promises no more. So the history of a block is cut at each such power cut into
/// eras, each checked as a register of its own that starts with whatever value survived the cut
/// (<see cref="Survivor"/>), and that survivor is checked against the flushes acknowledged before
/// the cut (DurabilityChecker). A cut of some hosts only loses nothing: the others hold every
/// acknowledged write, and the history is not cut there.
/// <para>
/// A cut has two instants: when the last host process was gone, and when the first one was being
/// started again. Between them nothing answers, so an answer recorded then (a client's thread may
/// note it late) was given before the cut. A write invoked before the cut belongs to both eras
/// when its answer came after the restart: before, as ambiguous (it may have landed and been
/// lost); after, as it ended (the library may have sent it again). One answered before the cut,
/// even with an error, does not carry over: it may have landed before the cut (and survived it,
/// or not), but nothing sends it after.
/// </para>
/// </summary>
public static class PowerCutEras
{
    /// <summary>The operations on one block (writes and reads of the volume, not of snapshots) in the era between two cuts (null: the start, the end).</summary>
    public static List<Operation> Era(IEnumerable<Operation> block, PowerCut? from, PowerCut? to)
    {
        var (fromCut, fromResumed) = from is null ? (TimeSpan.MinValue, TimeSpan.MinValue) : (from.Cut, from.Resumed);
        var (toCut, toResumed) = to is null ? (TimeSpan.MaxValue, TimeSpan.MaxValue) : (to.Cut, to.Resumed);
        var era = new List<Operation>();
        foreach (var o in block)
        {
            if (o.Kind == OperationKind.Read)
            {
                if (o.Completed > fromResumed && o.Completed <= toResumed)
                {
                    era.Add(o);
                }
                continue;
            }
            var startsHere = o.Invoked > fromCut && o.Invoked < toCut;
            var carriedOver = o.Invoked <= fromCut && o.Completed > fromResumed;
            if (!startsHere && !carriedOver)
            {
                continue;
            }
            // Answered after the next restart: it may have landed before that cut and been lost with it.
            era.Add(o.Completed > toResumed && o.IsOk ? o with { Outcome = Outcome.Failed, Error = "running at a power cut of every host" } : o);
        }
        return era;
    }

    /// <summary>Whether an operation was answered before the cut: nothing answers between the cut and the restart.</summary>
    public static bool AnsweredBefore(Operation operation, PowerCut cut) => operation.Invoked < cut.Cut && operation.Completed < cut.Resumed;

    /// <summary>
    /// The read that shows the value an era starts with: the earliest read in it of a value no
    /// write of the era wrote (or zeros). Null when no read in the era shows one.
    /// </summary>
    public static Operation? Survivor(IReadOnlyList<Operation> era)
    {
        var written = era.Where(o => o.Kind == OperationKind.Write).Select(o => o.Write).ToHashSet();
        return era
            .Where(o => o.Kind == OperationKind.Read && o.IsOk && (o.Read.Kind == ReadKind.Zeros || (o.Read.Kind == ReadKind.Value && !written.Contains(o.Read.Id))))
            .OrderBy(o => o.Completed)
            .FirstOrDefault();
    }

    /// <summary>The value a survivor read shows: null for zeros.</summary>
    public static WriteId? ValueOf(Operation? survivor) => survivor is { Read.Kind: ReadKind.Value } ? survivor.Read.Id : null;
}

/// <summary>A power cut of every host: <see cref="Cut"/> when the last host process was gone, <see cref="Resumed"/> when the first was being started again.</summary>
public sealed record PowerCut(TimeSpan Cut, TimeSpan Resumed);
