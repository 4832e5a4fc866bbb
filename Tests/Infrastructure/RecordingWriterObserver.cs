using OrleansStorage.Client.Library;
using OrleansStorage.Management;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A volume writer as the management service reaches it around snapshots: the client library's
/// own <see cref="VolumeWriteGates"/>, with every pause and resume counted once the gates have
/// taken it, so a test can wait for a call to have arrived before it looks at the gates.
/// </summary>
public sealed class RecordingWriterObserver : IVolumeWriterObserver
{
    private readonly Lock _lock = new();
    private readonly List<(Func<bool> Condition, TaskCompletionSource Reached)> _waiters = [];
    private int _quiesces;
    private int _resumes;

    internal VolumeWriteGates Gates { get; } = new();

    public int Quiesces
    {
        get
        {
            lock (_lock)
            {
                return _quiesces;
            }
        }
    }

    public int Resumes
    {
        get
        {
            lock (_lock)
            {
                return _resumes;
            }
        }
    }

    public async Task QuiesceAsync(Guid volumeId, Guid pauseId, TimeSpan drainFor, TimeSpan holdAtMost)
    {
        await Gates.QuiesceAsync(volumeId, pauseId, drainFor, holdAtMost);
        Record(() => _quiesces++);
    }

    public async Task ResumeAsync(Guid volumeId, Guid pauseId)
    {
        await Gates.ResumeAsync(volumeId, pauseId);
        Record(() => _resumes++);
    }

    /// <summary>Completes once <paramref name="quiesces"/> pauses and <paramref name="resumes"/> resumes have arrived; fails after 30 s.</summary>
    public Task WaitForAsync(int quiesces, int resumes)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool Condition() => _quiesces >= quiesces && _resumes >= resumes;
        lock (_lock)
        {
            if (Condition())
            {
                return Task.CompletedTask;
            }
            _waiters.Add((Condition, reached));
        }
        return reached.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    private void Record(Action count)
    {
        lock (_lock)
        {
            count();
            foreach (var waiter in _waiters.Where(w => w.Condition()).ToList())
            {
                waiter.Reached.TrySetResult();
                _waiters.Remove(waiter);
            }
        }
    }
}
