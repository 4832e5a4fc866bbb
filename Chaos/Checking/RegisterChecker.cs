using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// Per block: are the reads linearizable against the writes, the block being a register that
/// starts as zeros? Every write stores a value no other write stores, which makes the check
/// polynomial (Gibbons and Korach, "Testing shared memories", SIAM J. Comput. 26(4), 1997, the
/// register case with a known read-mapping); Knossos and Porcupine search the general case.
///
/// The model. Each write takes effect at one instant between its invocation and its return; a
/// read returns the value of the last write that took effect before the read's own instant,
/// which lies between the read's invocation and its return. A write that failed or timed out is
/// ambiguous: it may never take effect, or at any instant after its invocation, even after it
/// returned its error (a retried request may still be in flight), so its return counts as +∞.
/// The initial zeros are a write that took effect at -∞.
///
/// The check. Group each value's write with the reads that returned it: a cluster. Let F be the
/// earliest return in the cluster (the write's own, or a read's: by then the value had been
/// written) and L the latest invocation in it (the write's, or a read's: at L the value was
/// still there to be read). Because no value is written twice, once another write took effect
/// the value cannot come back, so the cluster's instants are contiguous in any linearization:
///   - if F &lt; L the cluster has a forward zone [F, L]: the value must be current through all of
///     it, so no other write can take effect inside it;
///   - otherwise its write and reads can all take effect at one instant in [L, F]: a backward zone.
/// The history is linearizable iff (Gibbons and Korach, Theorem 4.6)
///   1. every read returns zeros or the value of some write to that block, and returns after
///      that write was invoked;
///   2. no two forward zones overlap (two values cannot both be current at once);
///   3. no backward zone lies inside a forward zone (that write, with every read of it, would
///      have happened while another value had to be current: some read is stale, or a write lost).
/// An ambiguous write that no read returned is dropped: it may never have happened, which no
/// later read can contradict. One with reads keeps its reads' returns as its bound.
/// Comparisons are strict, so operations that merely touch at one timestamp are never flagged.
///
/// A write the client sent more than once (<see cref="Operation.Sends"/>: its reply was lost or
/// its primary deposed, and the library sent it again) may take effect once per send, each time
/// before it returns: a read while it is in flight may see its value, another write may replace
/// it, and the retry may bring it back. That is what a disk promises too: until a command
/// completes, what its blocks read is undefined. Such a write's cluster keeps only the reads
/// invoked after it returned (by then its last send took effect); each earlier read of it is a
/// zone of its own, [max(read invoked, write invoked), min(read returned, write returned)], a
/// send taking effect and the read at one instant, which must not lie inside a forward zone.
/// A write sent once keeps the strict rule above.
/// </summary>
public static class RegisterChecker
{
    private static readonly TimeSpan Infinity = TimeSpan.MaxValue;
    private static readonly TimeSpan MinusInfinity = TimeSpan.MinValue;

    /// <param name="cuts">The power cuts of every host, in order: each block's history is checked era by era (<see cref="PowerCutEras"/>).</param>
    public static List<Anomaly> Check(IEnumerable<Operation> history, IReadOnlyList<PowerCut>? cuts = null)
    {
        var anomalies = new List<Anomaly>();
        foreach (var block in history.Where(o => o.Block >= 0 && o.Kind is OperationKind.Write or OperationKind.Read && o.Snapshot is null).GroupBy(o => o.Block).OrderBy(g => g.Key))
        {
            var operations = block.ToList();
            var everyWrite = operations.Where(o => o.Kind == OperationKind.Write).ToDictionary(o => o.Write);
            PowerCut? from = null;
            foreach (var to in (cuts ?? []).Append(null))
            {
                var era = PowerCutEras.Era(operations, from, to);
                var initial = from is null ? null : PowerCutEras.ValueOf(PowerCutEras.Survivor(era));
                anomalies.AddRange(CheckBlock(block.Key, era, initial, everyWrite));
                from = to;
            }
        }
        return anomalies;
    }

    private sealed class Cluster(WriteId? value, Operation? write)
    {
        public WriteId? Value { get; } = value;

        public Operation? Write { get; } = write;

        public List<Operation> Reads { get; } = [];

        public TimeSpan FirstReturn { get; set; }

        public TimeSpan LastInvocation { get; set; }

        /// <summary>A read of a write sent more than once, made while that write was in flight: its zone is fixed when it is made.</summary>
        public bool IsInFlightRead { get; init; }

        public bool IsForward => FirstReturn < LastInvocation;

        public string Name => Value?.ToString() ?? "zeros";

        /// <summary>The operations that fix the zone's ends: the one that returned first and the one invoked last.</summary>
        public IEnumerable<Operation> Ends()
        {
            var all = (Write is null ? Reads : Reads.Prepend(Write)).ToList();
            var first = all.Where(o => ReturnOf(o) == FirstReturn).Take(1);
            var last = all.Where(o => o.Invoked == LastInvocation).Take(1);
            return first.Concat(last).Distinct();
        }
    }

    private static TimeSpan ReturnOf(Operation o) => o.Kind == OperationKind.Write && !o.IsOk ? Infinity : o.Completed;

    /// <param name="initial">The value the block starts with (null: zeros); after a power cut of every host, the one that survived it.</param>
    /// <param name="everyWrite">The block's writes in every era: to tell a value lost to a power cut from one never written.</param>
    private static List<Anomaly> CheckBlock(int block, List<Operation> operations, WriteId? initial, Dictionary<WriteId, Operation> everyWrite)
    {
        var anomalies = new List<Anomaly>();
        var writes = new Dictionary<WriteId, Operation>();
        foreach (var write in operations.Where(o => o.Kind == OperationKind.Write))
        {
            writes[write.Write] = write;
        }
        var start = new Cluster(initial, null);
        var clusters = new Dictionary<WriteId, Cluster>();
        var inFlightReads = new List<Cluster>();
        foreach (var read in operations.Where(o => o.Kind == OperationKind.Read && o.IsOk))
        {
            switch (read.Read.Kind)
            {
                case ReadKind.Zeros when initial is null:
                    start.Reads.Add(read);
                    break;
                case ReadKind.Zeros:
                    anomalies.Add(new("stale read", block, $"the read returned zeros after a power cut of every host, while {initial} was read as what survived it", read.Invoked, read.Completed, [read]));
                    break;
                case ReadKind.Garbled:
                    var writer = read.Read.Id != default && writes.TryGetValue(read.Read.Id, out var w) ? new[] { read, w } : [read];
                    anomalies.Add(new("garbled read", block, $"the read returned {read.Read}", read.Invoked, read.Completed, writer));
                    break;
                default:
                    if (!writes.TryGetValue(read.Read.Id, out var write))
                    {
                        if (initial == read.Read.Id)
                        {
                            start.Reads.Add(read);
                        }
                        else if (everyWrite.TryGetValue(read.Read.Id, out var earlier))
                        {
                            anomalies.Add(new("stale read", block, $"the read returned {read.Read.Id}, written before a power cut of every host, while {start.Name} was read as what survived it", read.Invoked, read.Completed, [read, earlier]));
                        }
                        else
                        {
                            anomalies.Add(new("phantom value", block, $"the read returned {read.Read.Id}, which was never written to this block", read.Invoked, read.Completed, [read]));
                        }
                        break;
                    }
                    if (read.Completed < write.Invoked)
                    {
                        anomalies.Add(new("read from the future", block, $"the read returned {write.Write} before that write was invoked", read.Invoked, write.Invoked, [read, write]));
                        break;
                    }
                    if (write.Sends > 1 && read.Invoked < ReturnOf(write))
                    {
                        inFlightReads.Add(new Cluster(write.Write, write)
                        {
                            IsInFlightRead = true,
                            Reads = { read },
                            LastInvocation = Max(read.Invoked, write.Invoked),
                            FirstReturn = Min(read.Completed, ReturnOf(write)),
                        });
                        break;
                    }
                    if (!clusters.TryGetValue(write.Write, out var cluster))
                    {
                        clusters[write.Write] = cluster = new Cluster(write.Write, write);
                    }
                    cluster.Reads.Add(read);
                    break;
            }
        }
        foreach (var write in writes.Values.Where(w => w.IsOk && !clusters.ContainsKey(w.Write)))
        {
            clusters[write.Write] = new Cluster(write.Write, write);
        }

        var all = initial is null || start.Reads.Count > 0 ? clusters.Values.Append(start).ToList() : [.. clusters.Values];
        foreach (var cluster in all)
        {
            var members = cluster.Reads.AsEnumerable();
            cluster.FirstReturn = cluster.Write is null ? MinusInfinity : new[] { ReturnOf(cluster.Write) }.Concat(members.Select(ReturnOf)).Min();
            cluster.LastInvocation = cluster.Write is null
                ? (cluster.Reads.Count == 0 ? MinusInfinity : cluster.Reads.Max(r => r.Invoked))
                : members.Select(r => r.Invoked).Append(cluster.Write.Invoked).Max();
        }

        var forward = all.Where(c => c.IsForward).OrderBy(c => c.FirstReturn).ToList();
        for (var i = 0; i < forward.Count; i++)
        {
            var a = forward[i];
            for (var j = i + 1; j < forward.Count && forward[j].FirstReturn < a.LastInvocation; j++)
            {
                var b = forward[j];
                if (b.FirstReturn < a.LastInvocation && a.FirstReturn < b.LastInvocation)
                {
                    anomalies.Add(new("stale read", block,
                        $"{a.Name} had to be the value from {Seconds(a.FirstReturn)} to {Seconds(a.LastInvocation)} and {b.Name} from {Seconds(b.FirstReturn)} to {Seconds(b.LastInvocation)}: "
                        + "both were read after the other was acknowledged or read",
                        Max(a.FirstReturn, b.FirstReturn), Min(a.LastInvocation, b.LastInvocation), [.. a.Ends(), .. b.Ends()]));
                }
            }
        }
        foreach (var inner in all.Where(c => !c.IsForward && c.Value is not null).Concat(inFlightReads))
        {
            foreach (var outer in forward.Where(f => f.FirstReturn < inner.LastInvocation && inner.FirstReturn < f.LastInvocation))
            {
                var kind = outer.Value is null ? "lost write" : "stale read";
                anomalies.Add(new(kind, block,
                    $"{inner.Name} was written{(inner.Reads.Count > 0 ? " and read" : "")}{(inner.IsInFlightRead ? $" (sent {inner.Write!.Sends} times, read in flight)" : "")} between {Seconds(inner.LastInvocation)} and {Seconds(inner.FirstReturn)}, "
                    + $"while {outer.Name} had to be the value from {Seconds(outer.FirstReturn)} to {Seconds(outer.LastInvocation)}: "
                    + (outer.Value is null ? "zeros were read after that write was acknowledged" : $"{outer.Name} was read again after {inner.Name} replaced it"),
                    outer.FirstReturn == MinusInfinity ? inner.LastInvocation : outer.FirstReturn, outer.LastInvocation, [.. inner.Ends(), .. outer.Ends()]));
            }
        }
        anomalies.AddRange(CountComebacks(block, operations, inFlightReads, clusters));
        return anomalies;
    }

    /// <summary>
    /// A write sent k times takes effect at most k times. Between two of its in-flight reads (and
    /// between the last of them and the reads after it returned) it had to take effect again if
    /// another value was surely current in between: a write of it acknowledged, or a read of it
    /// answered, wholly inside the gap. More comebacks than sends is a stale read: two primaries
    /// serving one group would look like this.
    /// </summary>
    private static IEnumerable<Anomaly> CountComebacks(int block, List<Operation> operations, List<Cluster> inFlightReads, Dictionary<WriteId, Cluster> clusters)
    {
        foreach (var reads in inFlightReads.GroupBy(c => c.Write!.Write))
        {
            var write = reads.First().Write!;
            var points = reads.SelectMany(c => c.Reads).OrderBy(r => r.Invoked).ToList();
            if (clusters.TryGetValue(write.Write, out var after) && after.Reads.Count > 0)
            {
                points.Add(after.Reads.MinBy(r => r.Invoked)!);
            }
            var others = operations.Where(o => o.IsOk && (o.Kind == OperationKind.Write ? o.Write != write.Write : o.Read.Kind != ReadKind.Garbled && !(o.Read.Kind == ReadKind.Value && o.Read.Id == write.Write))).ToList();
            var effects = 1;
            Operation? separator = null;
            for (var i = 0; i + 1 < points.Count; i++)
            {
                var between = others.FirstOrDefault(o => o.Invoked > points[i].Completed && o.Completed < points[i + 1].Invoked);
                if (between is not null)
                {
                    effects++;
                    separator = between;
                }
            }
            if (effects > write.Sends)
            {
                yield return new Anomaly("stale read", block,
                    $"{write.Write} was sent {write.Sends} times but was read back {effects} times with another value current in between: each comeback needs a send of its own",
                    points[0].Invoked, points[^1].Completed, [write, .. points, separator!]);
            }
        }
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    internal static string Seconds(TimeSpan t) =>
        t == MinusInfinity ? "the start" : t == Infinity ? "never" : $"{t.TotalSeconds:0.000} s";
}
