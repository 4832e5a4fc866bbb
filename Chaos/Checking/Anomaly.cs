using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Checking;

/// <summary>
/// One thing the run shows to be wrong: its kind, the block it concerns (-1 when it is not about
/// one block), why it is wrong in words, the stretch of the run it spans, and the operations that
/// prove it (the report prints these with the rest of the block's history and the faults around).
/// </summary>
public sealed record Anomaly(string Kind, int Block, string Explanation, TimeSpan From, TimeSpan To, IReadOnlyList<Operation> Evidence)
{
    public static Anomaly NotAboutABlock(string kind, string explanation, TimeSpan at) => new(kind, -1, explanation, at, at, []);
}
