using OrleansStorage.Chaos.History;
using OrleansStorage.Client.Library;

namespace OrleansStorage.Chaos.Workload;

/// <summary>
/// Takes snapshots of the workload's volumes while it writes (and faults strike): every few
/// seconds one of a volume chosen by its <see cref="Random"/>, recorded like any operation. They
/// are read block by block after healing (<see cref="Checking.SnapshotChecker"/>).
/// </summary>
public sealed class SnapshotTaker(int id, OstorClient admin, BlockLayout layout, HistoryRecorder history, Random random, int maxSnapshots)
{
    public async Task RunAsync(CancellationToken stop)
    {
        for (var n = 1; n <= maxSnapshots; n++)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(3 + random.NextDouble() * 7), stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            var volume = random.Next(layout.Volumes.Count);
            var name = $"s{n}";
            var invoked = history.Now;
            Outcome outcome;
            string? error = null;
            try
            {
                await admin.CreateSnapshotAsync(layout.Volumes[volume].Name, name).WaitAsync(TimeSpan.FromSeconds(60));
                outcome = Outcome.Ok;
            }
            catch (TimeoutException)
            {
                outcome = Outcome.TimedOut;
            }
            catch (Exception ex)
            {
                outcome = Outcome.Failed;
                error = $"{ex.GetType().Name}: {ex.Message.Split('\n')[0]}";
            }
            history.Add(new Operation(history.NextId(), id, OperationKind.SnapshotCreate, volume, -1, invoked, history.Now, outcome, Error: error, Snapshot: name));
        }
    }
}
