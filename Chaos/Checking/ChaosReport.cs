using OrleansStorage.Chaos.Faults;
using OrleansStorage.Chaos.History;
using OrleansStorage.Chaos.Workload;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// What a person reads after a run: a summary of the history, then each anomaly with its block,
/// the block's operations around it (the evidence marked) and the faults in force around it, and
/// as the very last line <c>chaos: seed S, N operations, N faults, N anomalies</c>.
/// </summary>
public sealed class ChaosReport(TextWriter output, IReadOnlyList<Operation> history, FaultLog faults, BlockLayout layout)
{
    private const int MaxDetailed = 30;
    private const int MaxHistoryLines = 40;
    private static readonly TimeSpan Margin = TimeSpan.FromSeconds(3);

    public void Print(int seed, IReadOnlyList<Anomaly> anomalies)
    {
        var writes = history.Where(o => o.Kind == OperationKind.Write).ToList();
        var reads = history.Where(o => o.Kind == OperationKind.Read).ToList();
        var flushes = history.Where(o => o.Kind == OperationKind.Flush).ToList();
        var snapshots = history.Where(o => o.Kind == OperationKind.SnapshotCreate).ToList();
        output.WriteLine();
        output.WriteLine($"history: {writes.Count} writes ({writes.Count(o => o.IsOk)} acknowledged, {writes.Count(o => !o.IsOk)} ambiguous, {writes.Count(o => o.Sends > 1)} sent more than once), "
            + $"{reads.Count} reads ({reads.Count(o => o.IsOk)} answered, {reads.Count(o => o.Final && o.Snapshot is null)} after healing), {flushes.Count} flushes ({flushes.Count(o => o.IsOk)} acknowledged), "
            + $"{snapshots.Count} snapshots ({snapshots.Count(o => o.IsOk)} created, {reads.Count(o => o.Snapshot is not null)} blocks read from them)");
        var acknowledged = writes.Where(o => o.IsOk && !o.Final).Select(o => o.Completed).Order().ToList();
        if (acknowledged.Count > 1)
        {
            // Not an anomaly (faults may stall writes while the cluster fails over), but the number to watch.
            var gap = acknowledged.Zip(acknowledged.Skip(1)).MaxBy(p => p.Second - p.First);
            output.WriteLine($"longest time without an acknowledged write: {(gap.Second - gap.First).TotalSeconds:0.0} s ({gap.First.TotalSeconds:0.000} s .. {gap.Second.TotalSeconds:0.000} s)");
        }
        foreach (var error in history.Where(o => !o.IsOk).GroupBy(o => o.Error ?? "timed out").OrderByDescending(g => g.Count()).Take(5))
        {
            output.WriteLine($"  {error.Count()} x {error.Key}");
        }
        output.WriteLine("faults:");
        foreach (var fault in faults.All())
        {
            output.WriteLine("  " + fault);
        }
        output.WriteLine();
        for (var i = 0; i < anomalies.Count && i < MaxDetailed; i++)
        {
            PrintAnomaly(i + 1, anomalies[i]);
        }
        if (anomalies.Count > MaxDetailed)
        {
            output.WriteLine($"... and {anomalies.Count - MaxDetailed} more: " + string.Join(", ", anomalies.Skip(MaxDetailed).GroupBy(a => a.Kind).Select(g => $"{g.Count()} {g.Key}")));
        }
        output.WriteLine($"chaos: seed {seed}, {history.Count} operations, {faults.All().Count} faults, {anomalies.Count} anomalies");
    }

    private void PrintAnomaly(int number, Anomaly anomaly)
    {
        var where = anomaly.Block >= 0 ? " on " + layout.Describe(anomaly.Block) : "";
        output.WriteLine($"anomaly {number}: {anomaly.Kind}{where}: {anomaly.Explanation}");
        if (anomaly.Block >= 0)
        {
            var evidence = anomaly.Evidence.Select(o => o.Id).ToHashSet();
            var from = anomaly.Evidence.Count > 0 ? Min(anomaly.From, anomaly.Evidence.Min(o => o.Invoked)) : anomaly.From;
            var to = anomaly.Evidence.Count > 0 ? Max(anomaly.To, anomaly.Evidence.Max(o => o.Completed)) : anomaly.To;
            var lines = history.Where(o => evidence.Contains(o.Id) || (o.Block == anomaly.Block && o.Snapshot is null && o.Completed >= from - Margin && o.Invoked <= to + Margin)).ToList();
            output.WriteLine($"  history of block {anomaly.Block} from {(from - Margin).TotalSeconds:0.000} s to {(to + Margin).TotalSeconds:0.000} s (* = evidence; {lines.Count} operations):");
            foreach (var operation in lines.Where(o => evidence.Contains(o.Id) || lines.Count <= MaxHistoryLines || Near(o, anomaly)).Take(MaxHistoryLines))
            {
                output.WriteLine($"  {(evidence.Contains(operation.Id) ? "*" : " ")} {operation}");
            }
            foreach (var fault in faults.Around(from, to, Margin))
            {
                output.WriteLine("    " + fault);
            }
        }
        else
        {
            foreach (var fault in faults.Around(anomaly.From, anomaly.To, TimeSpan.FromSeconds(10)))
            {
                output.WriteLine("    " + fault);
            }
        }
        output.WriteLine();
    }

    private static bool Near(Operation o, Anomaly a) =>
        a.Evidence.Any(e => Math.Abs((e.Invoked - o.Invoked).TotalSeconds) < 1 || Math.Abs((e.Completed - o.Completed).TotalSeconds) < 1);

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}
