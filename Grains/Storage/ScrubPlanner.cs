namespace OrleansStorage.Storage;

/// <summary>
/// Decides, block by block, which copy of a segment is right and which replicas must be rewritten.
/// A copy that fails its checksum is never a source. Among the good copies the checksum held by
/// the most replicas wins (the primary's breaks a tie): a block that is good everywhere but
/// differs is a divergence, and the majority is the better evidence than who leads the group.
/// No good copy at all: the block is lost, and nothing is rewritten over it.
/// </summary>
internal static class ScrubPlanner
{
    /// <param name="primary">The host whose copy breaks ties.</param>
    /// <param name="copies">Every replica that answered, with its check of the segment.</param>
    public static ScrubPlan Plan(string primary, IReadOnlyList<(string HostId, SegmentCheck Check)> copies)
    {
        var blocks = copies.Count == 0 ? 0 : copies.Max(c => Math.Max(c.Check.Checksums.Length, c.Check.BadBlocks.DefaultIfEmpty(-1).Max() + 1));
        var bad = copies.Select(c => c.Check.BadBlocks.ToHashSet()).ToArray();
        var repairs = new List<BlockRepairPlan>();
        var lost = new List<int>();
        var findings = new List<BlockFinding>();
        for (var block = 0; block < blocks; block++)
        {
            var votes = new Dictionary<uint, List<int>>();
            for (var i = 0; i < copies.Count; i++)
            {
                if (bad[i].Contains(block))
                {
                    findings.Add(new BlockFinding(copies[i].HostId, block, BlockProblem.FailsChecksum));
                    continue;
                }
                var value = ValueOf(copies[i].Check, block);
                if (!votes.TryGetValue(value, out var holders))
                {
                    votes[value] = holders = [];
                }
                holders.Add(i);
            }
            if (votes.Count == 0)
            {
                lost.Add(block);
                continue;
            }
            var winner = votes
                .OrderByDescending(v => v.Value.Count)
                .ThenByDescending(v => v.Value.Any(i => copies[i].HostId == primary))
                .First();
            var targets = new List<string>();
            for (var i = 0; i < copies.Count; i++)
            {
                if (winner.Value.Contains(i))
                {
                    continue;
                }
                targets.Add(copies[i].HostId);
                if (!bad[i].Contains(block))
                {
                    findings.Add(new BlockFinding(copies[i].HostId, block, BlockProblem.Differs));
                }
            }
            if (targets.Count > 0)
            {
                var source = winner.Value.Select(i => copies[i].HostId).OrderByDescending(h => h == primary).First();
                repairs.Add(new BlockRepairPlan(block, source, [.. targets]));
            }
        }
        return new ScrubPlan(repairs, lost, findings);
    }

    /// <summary>The stored value of a block past the end of what a host holds is a zero block's: 0.</summary>
    private static uint ValueOf(SegmentCheck check, int block) => block < check.Checksums.Length ? check.Checksums[block] : 0;

    /// <summary>Consecutive blocks with the same source and targets, as one run each: what is copied in one message.</summary>
    public static IEnumerable<(int FirstBlock, int Blocks, string Source, string[] Targets)> Runs(IEnumerable<BlockRepairPlan> repairs)
    {
        (int First, int Count, string Source, string[] Targets)? run = null;
        foreach (var repair in repairs)
        {
            if (run is { } r && r.First + r.Count == repair.Block && r.Source == repair.Source && r.Targets.SequenceEqual(repair.Targets))
            {
                run = r with { Count = r.Count + 1 };
                continue;
            }
            if (run is { } done)
            {
                yield return done;
            }
            run = (repair.Block, 1, repair.Source, repair.Targets);
        }
        if (run is { } last)
        {
            yield return last;
        }
    }

    /// <summary>Findings as lines for a person: consecutive blocks of one host with one problem together.</summary>
    public static IEnumerable<string> Describe(IEnumerable<BlockFinding> findings) =>
        findings
            .GroupBy(f => (f.HostId, f.Problem))
            .SelectMany(g => Ranges(g.Select(f => f.Block).Order()).Select(r => (g.Key.HostId, g.Key.Problem, r.First, r.Last)))
            .OrderBy(f => f.First)
            .Select(f => f.First == f.Last
                ? $"{f.HostId}: block {f.First} " + (f.Problem == BlockProblem.FailsChecksum ? "fails its checksum" : "differs from the majority of good copies")
                : $"{f.HostId}: blocks {f.First}-{f.Last} " + (f.Problem == BlockProblem.FailsChecksum ? "fail their checksums" : "differ from the majority of good copies"));

    /// <summary>Sorted block numbers as ranges of consecutive ones, first and last of each.</summary>
    public static IEnumerable<(int First, int Last)> Ranges(IEnumerable<int> sorted)
    {
        int? first = null, last = null;
        foreach (var block in sorted)
        {
            if (last is { } l && block == l + 1)
            {
                last = block;
                continue;
            }
            if (first is { } f)
            {
                yield return (f, last!.Value);
            }
            first = last = block;
        }
        if (first is { } ff)
        {
            yield return (ff, last!.Value);
        }
    }
}

internal enum BlockProblem
{
    FailsChecksum,
    Differs,
}

internal sealed record BlockFinding(string HostId, int Block, BlockProblem Problem);

/// <summary>One block to rewrite on <see cref="Targets"/> from <see cref="Source"/>'s good copy.</summary>
internal sealed record BlockRepairPlan(int Block, string Source, string[] Targets);

internal sealed record ScrubPlan(IReadOnlyList<BlockRepairPlan> Repairs, IReadOnlyList<int> LostBlocks, IReadOnlyList<BlockFinding> Findings);
