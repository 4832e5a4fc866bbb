namespace OrleansStorage.Chaos.History;

public enum OperationKind
{
    Write,
    Read,
    Flush,

    /// <summary>A snapshot of <see cref="Operation.Volume"/> created, named <see cref="Operation.Snapshot"/>.</summary>
    SnapshotCreate,
}

public enum Outcome
{
    /// <summary>Acknowledged: the call returned without an error.</summary>
    Ok,

    /// <summary>The call threw. For a write: ambiguous, it may or may not have taken effect, even later.</summary>
    Failed,

    /// <summary>No answer before the workload's deadline: as ambiguous as a failure.</summary>
    TimedOut,
}

/// <summary>
/// One recorded call: who made it, on which block (-1 for a flush, which covers the client's
/// writes to <see cref="Volume"/>), when it was invoked and when it returned (times since the
/// start of the run), and what came of it. <see cref="Write"/> is the value a write wrote,
/// <see cref="Read"/> what a read returned. <see cref="Final"/> marks the reads made after every
/// fault was healed. <see cref="Snapshot"/> names the snapshot a create made or a read read
/// (null: the volume itself). <see cref="Sends"/> is how many times a write was sent to a
/// primary: more than one (a retry after a lost reply or a map change) and it may have taken
/// effect more than once before it returned.
/// </summary>
public sealed record Operation(
    long Id,
    int Client,
    OperationKind Kind,
    int Volume,
    int Block,
    TimeSpan Invoked,
    TimeSpan Completed,
    Outcome Outcome,
    WriteId Write = default,
    BlockRead Read = default,
    string? Error = null,
    bool Final = false,
    string? Snapshot = null,
    int Sends = 1)
{
    public bool IsOk => Outcome == Outcome.Ok;

    public override string ToString()
    {
        var what = Kind switch
        {
            OperationKind.Write => $"write {Write}",
            OperationKind.Read when Snapshot is not null => $"read of snapshot {Snapshot}",
            OperationKind.Read => Final ? "final read" : "read",
            OperationKind.SnapshotCreate => $"snapshot create {Snapshot} of volume {Volume}",
            _ => $"flush volume {Volume}",
        };
        var result = Outcome switch
        {
            Outcome.Ok when Kind == OperationKind.Read => "-> " + Read,
            Outcome.Ok => Sends > 1 ? $"ok (sent {Sends} times)" : "ok",
            Outcome.Failed => "FAILED (ambiguous" + (Sends > 1 ? $", sent {Sends} times" : "") + "): " + Error,
            _ => "TIMED OUT (ambiguous)",
        };
        return $"[{Invoked.TotalSeconds,8:0.000} .. {Completed.TotalSeconds,8:0.000}] client {Client,2} {what} {result}";
    }
}
