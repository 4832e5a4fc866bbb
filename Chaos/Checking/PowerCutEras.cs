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
/// The cut's instant is when the last process was gone: every answer given before it was given
/// before the cut, none after. A write whose call was still running at the cut belongs to both
/// eras: before, as ambiguous (it may have landed and been lost); after, as it ended (the library
/// may have sent it again after the restart). One that failed before the cut does not carry over:
/// it may have landed before the cut (and survived it, or not), but nothing sends it after.
/// </para>
/// </summary>
public static class PowerCutEras
{
    /// <summary>The operations on one block (writes and reads of the volume, not of snapshots) in the era between two cuts.</summary>
    public static List<Operation> Era(IEnumerable<Operation> block, TimeSpan from, TimeSpan to)
    {
        var era = new List<Operation>();
        foreach (var o in block)
        {
            if (o.Kind == OperationKind.Read)
            {
                if (o.Completed > from && o.Completed <= to)
                {
                    era.Add(o);
                }
                continue;
            }
            var startsHere = o.Invoked > from && o.Invoked < to;
            var carriedOver = o.Invoked <= from && o.Completed > from;
            if (!startsHere && !carriedOver)
            {
                continue;
            }
            // Still running at the end of the era: it may have landed before the cut and been lost with it.
            era.Add(o.Completed > to && o.IsOk ? o with { Outcome = Outcome.Failed, Error = "running at a power cut of every host" } : o);
        }
        return era;
    }

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
