namespace OrleansStorage.Chaos.Faults;

/// <summary>A fault the seed chose: when to begin (at the earliest), what, on which host, for how long.</summary>
/// <summary>For a partition, <see cref="CutFrom"/> names the peers (infra/partition's --from: host-M, db, clients); empty: every other host and the database.</summary>
public sealed record PlannedFault(TimeSpan At, FaultKind Kind, int Host, TimeSpan Duration, string[] CutFrom)
{
    public override string ToString() =>
        $"{At.TotalSeconds,6:0.0} s: {Kind} {(Kind == FaultKind.ClusterPowerCut ? "of every host" : Host == FaultSchedule.ManagementHost ? "the management host" : $"host-{Host}")}{(Kind == FaultKind.Partition ? " from " + (CutFrom.Length == 0 ? "every other host and the database" : string.Join(", ", CutFrom)) : "")} for {Duration.TotalSeconds:0.0} s";
}

/// <summary>
/// The faults of a run, all drawn from one <see cref="Random"/> before the run starts, so the same
/// seed plans the same faults in the same order. Faults come one at a time, each healed before
/// the next; a quiet gap between them lets writes reach a healthy cluster too. Real time decides
/// only how many of the planned faults fit in the run (a restart takes as long as it takes).
/// </summary>
public static class FaultSchedule
{
    /// <summary>What a kill's restart, a database start or a heal usually adds to a fault's planned duration.</summary>
    private static readonly TimeSpan Recovery = TimeSpan.FromSeconds(8);

    /// <summary>A fault's host that stands for the one running the management service when the fault begins.</summary>
    public const int ManagementHost = 0;

    /// <summary>Each kind's share of the faults drawn (partitions only with network namespaces).</summary>
    private static readonly (FaultKind Kind, int Weight)[] Weights =
    [
        (FaultKind.KillHost, 15), (FaultKind.KillManagement, 12), (FaultKind.PowerCut, 14), (FaultKind.ClusterPowerCut, 8),
        (FaultKind.StopDatabase, 12), (FaultKind.ReadOnlyDisk, 10), (FaultKind.FailingFsync, 10), (FaultKind.Partition, 25),
    ];

    /// <summary>A kind's name on the command line (--faults): power-cut for PowerCut.</summary>
    public static string NameOf(FaultKind kind) =>
        string.Concat(kind.ToString().Select((c, i) => char.IsUpper(c) && i > 0 ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));

    /// <summary>The kinds named on the command line (comma-separated <see cref="NameOf"/> names); throws ArgumentException naming one it does not know.</summary>
    public static IReadOnlySet<FaultKind> ParseKinds(string names) =>
        names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(name => Enum.GetValues<FaultKind>().Cast<FaultKind?>().FirstOrDefault(k => NameOf(k!.Value) == name)
                ?? throw new ArgumentException($"no fault '{name}'; the faults are {string.Join(", ", Enum.GetValues<FaultKind>().Select(NameOf))}"))
            .ToHashSet();

    /// <param name="kinds">The kinds to draw from; null: all (partitions only when <paramref name="partitions"/>).</param>
    public static List<PlannedFault> Plan(Random random, TimeSpan runLength, int hosts, bool partitions, IReadOnlySet<FaultKind>? kinds = null)
    {
        var drawn = Weights.Where(w => (kinds?.Contains(w.Kind) ?? true) && (partitions || w.Kind != FaultKind.Partition)).ToArray();
        var total = drawn.Sum(w => w.Weight);
        var plan = new List<PlannedFault>();
        var at = TimeSpan.FromSeconds(3 + random.NextDouble() * 3);
        while (total > 0 && at < runLength - TimeSpan.FromSeconds(5))
        {
            var roll = random.Next(total);
            var pick = 0;
            while (roll >= drawn[pick].Weight)
            {
                roll -= drawn[pick].Weight;
                pick++;
            }
            var kind = drawn[pick].Kind;
            var host = random.Next(1, hosts + 1);
            var duration = kind switch
            {
                // Below and beyond Orleans' failure detection (a few seconds): a host that returns
                // before it is declared dead, and one that is Down and resynced.
                FaultKind.KillHost or FaultKind.KillManagement or FaultKind.PowerCut or FaultKind.ClusterPowerCut => TimeSpan.FromSeconds(1 + random.NextDouble() * 14),
                FaultKind.StopDatabase => TimeSpan.FromSeconds(2 + random.NextDouble() * 18),
                // Long enough for the host to fail and be marked Out, mostly.
                FaultKind.ReadOnlyDisk or FaultKind.FailingFsync => TimeSpan.FromSeconds(3 + random.NextDouble() * 12),
                _ => TimeSpan.FromSeconds(5 + random.NextDouble() * 20),
            };
            string[] cutFrom = [];
            if (kind == FaultKind.Partition)
            {
                var other = (host + random.Next(1, hosts) - 1) % hosts + 1;
                if (random.Next(2) == 0)
                {
                    host = ManagementHost; // the host running the management service, whichever it is then
                }
                cutFrom = random.Next(4) switch
                {
                    0 => [],                // the whole cluster, the database too: Orleans declares it dead
                    1 => ["db"],            // only the database: membership and the map out of reach
                    2 => [$"host-{other}"], // one peer: a split the failure detector may or may not settle
                    _ => ["clients"],       // only the clients: their requests to it time out (ambiguous)
                };
            }
            plan.Add(new PlannedFault(at, kind, host, duration, cutFrom));
            at += duration + Recovery + TimeSpan.FromSeconds(2 + random.NextDouble() * 4);
        }
        return plan;
    }
}
