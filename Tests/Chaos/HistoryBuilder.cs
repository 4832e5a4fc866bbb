using OrleansStorage.Chaos.History;

namespace OrleansStorage.Tests.Chaos;

/// <summary>Hand-written histories for the checker's tests: times in seconds, one volume, values named by client and sequence.</summary>
internal sealed class HistoryBuilder
{
    private readonly List<Operation> _operations = [];

    public IReadOnlyList<Operation> Operations => _operations;

    public static WriteId V(int client, long sequence) => new(client, sequence);

    /// <param name="sends">How many times the library sent the write: more than one, it may take effect once per send.</param>
    public HistoryBuilder Write(WriteId value, int block, double invoked, double completed, Outcome outcome = Outcome.Ok, int sends = 1) =>
        Add(new Operation(_operations.Count + 1, value.Client, OperationKind.Write, 0, block, S(invoked), S(completed), outcome, Write: value, Error: outcome == Outcome.Failed ? "connection lost" : null, Sends: sends));

    public HistoryBuilder Read(int block, double invoked, double completed, WriteId value, bool final = false) =>
        Add(new Operation(_operations.Count + 1, 9, OperationKind.Read, 0, block, S(invoked), S(completed), Outcome.Ok, Read: new BlockRead(ReadKind.Value, value), Final: final));

    public HistoryBuilder ReadZeros(int block, double invoked, double completed, bool final = false) =>
        Add(new Operation(_operations.Count + 1, 9, OperationKind.Read, 0, block, S(invoked), S(completed), Outcome.Ok, Read: BlockRead.Zeros, Final: final));

    public HistoryBuilder ReadBytes(int block, double invoked, double completed, byte[] bytes, int runTag, bool final = false) =>
        Add(new Operation(_operations.Count + 1, 9, OperationKind.Read, 0, block, S(invoked), S(completed), Outcome.Ok, Read: BlockValue.Decode(bytes, runTag, block), Final: final));

    public HistoryBuilder FailedRead(int block, double invoked, double completed, bool final = false) =>
        Add(new Operation(_operations.Count + 1, 9, OperationKind.Read, 0, block, S(invoked), S(completed), Outcome.Failed, Error: "unavailable", Final: final));

    public HistoryBuilder Flush(int client, double invoked, double completed, Outcome outcome = Outcome.Ok) =>
        Add(new Operation(_operations.Count + 1, client, OperationKind.Flush, 0, -1, S(invoked), S(completed), outcome));

    public HistoryBuilder Snapshot(string name, double invoked, double completed, Outcome outcome = Outcome.Ok) =>
        Add(new Operation(_operations.Count + 1, 8, OperationKind.SnapshotCreate, 0, -1, S(invoked), S(completed), outcome, Snapshot: name));

    public HistoryBuilder ReadSnapshot(string name, int block, double invoked, double completed, WriteId? value) =>
        Add(new Operation(_operations.Count + 1, 9, OperationKind.Read, 0, block, S(invoked), S(completed), Outcome.Ok,
            Read: value is { } v ? new BlockRead(ReadKind.Value, v) : BlockRead.Zeros, Final: true, Snapshot: name));

    private HistoryBuilder Add(Operation operation)
    {
        _operations.Add(operation);
        return this;
    }

    private static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);
}
