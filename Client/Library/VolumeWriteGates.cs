using System.Collections.Concurrent;
using OrleansStorage.Management;

namespace OrleansStorage.Client.Library;

/// <summary>
/// This client's writes in flight, per volume, and the pause a snapshot asks for: while paused, a
/// new write (or trim) of the volume waits before its first piece is sent, and the pause begins
/// only once the writes in flight have finished, so no write is split by the snapshot. The
/// management service reaches it as an <see cref="IVolumeWriterObserver"/>; the client registers
/// it for each volume it writes (<see cref="OstorClient"/>).
/// </summary>
internal sealed class VolumeWriteGates : IVolumeWriterObserver
{
    private readonly ConcurrentDictionary<Guid, Gate> _gates = new();

    /// <summary>Waits while the volume is paused, then counts the write in flight until the pass is disposed.</summary>
    public ValueTask<Pass> EnterAsync(Guid volumeId, CancellationToken cancellationToken) =>
        _gates.GetOrAdd(volumeId, _ => new Gate()).EnterAsync(cancellationToken);

    public Task QuiesceAsync(Guid volumeId, TimeSpan drainFor, TimeSpan holdAtMost) =>
        _gates.GetOrAdd(volumeId, _ => new Gate()).PauseAsync(drainFor, holdAtMost);

    public Task ResumeAsync(Guid volumeId)
    {
        if (_gates.TryGetValue(volumeId, out var gate))
        {
            gate.Resume();
        }
        return Task.CompletedTask;
    }

    /// <summary>Starts the volume paused: a snapshot of it was being taken when this client began writing it.</summary>
    public void StartPaused(Guid volumeId, TimeSpan holdAtMost) => _gates.GetOrAdd(volumeId, _ => new Gate()).PauseAsync(TimeSpan.Zero, holdAtMost).Ignore();

    /// <summary>A write in flight; disposing it lets a pause waiting for it begin.</summary>
    public readonly struct Pass(Gate gate) : IDisposable
    {
        public void Dispose() => gate.Exit();
    }

    internal sealed class Gate
    {
        private readonly Lock _lock = new();
        private int _inFlight;
        private TaskCompletionSource? _resumed;
        private TaskCompletionSource? _drained;

        public async ValueTask<Pass> EnterAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                lock (_lock)
                {
                    if (_resumed is null)
                    {
                        _inFlight++;
                        return new Pass(this);
                    }
                    wait = _resumed.Task;
                }
                await wait.WaitAsync(cancellationToken);
            }
        }

        public void Exit()
        {
            lock (_lock)
            {
                _inFlight--;
                if (_inFlight == 0)
                {
                    _drained?.TrySetResult();
                }
            }
        }

        public async Task PauseAsync(TimeSpan drainFor, TimeSpan holdAtMost)
        {
            Task drained;
            TaskCompletionSource pause;
            lock (_lock)
            {
                pause = _resumed ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _drained = _inFlight == 0 ? null : new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                drained = _drained?.Task ?? Task.CompletedTask;
            }
            // Never paused for good: a resume lost with the management service still ends it.
            _ = Task.Delay(holdAtMost).ContinueWith(_ => Resume(pause), TaskScheduler.Default);
            try
            {
                await drained.WaitAsync(drainFor);
            }
            catch (TimeoutException)
            {
                // A write stuck longer (its host dead) is not waited for; it may be split.
            }
        }

        public void Resume() => Resume(null);

        private void Resume(TaskCompletionSource? only)
        {
            lock (_lock)
            {
                if (_resumed is null || (only is not null && _resumed != only))
                {
                    return;
                }
                _resumed.TrySetResult();
                _resumed = null;
                _drained = null;
            }
        }
    }
}
