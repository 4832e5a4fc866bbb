using System.Collections.Concurrent;
using OrleansStorage.Management;

namespace OrleansStorage.Client.Library;

/// <summary>
/// This client's writes in flight, per volume, and the pauses snapshots ask for: while paused, a
/// new write (or trim) of the volume waits before its first piece is sent, and a pause begins
/// only once the writes in flight have finished, so no write is split by the snapshot. Each pause
/// is one create's (its id): a resume ends that pause only, and writes go on once every pause of
/// the volume has ended. The management service reaches it as an <see cref="IVolumeWriterObserver"/>;
/// the client registers it for each volume it writes (<see cref="OstorClient"/>).
/// A pause asked for again (management repeats it while its create runs) lasts its hold limit
/// from the last time it was asked for.
/// </summary>
internal sealed class VolumeWriteGates(TimeProvider clock) : IVolumeWriterObserver
{
    public VolumeWriteGates()
        : this(TimeProvider.System)
    {
    }

    /// <summary>
    /// How long a resumed pause is remembered, so that it does not begin (again) should its
    /// request arrive after the resume: far longer than management waits for a pause to be answered.
    /// </summary>
    private static readonly TimeSpan ResumedIdMemory = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<Guid, Gate> _gates = new();

    /// <summary>Waits while the volume is paused, then counts the write in flight until the pass is disposed.</summary>
    public ValueTask<Pass> EnterAsync(Guid volumeId, CancellationToken cancellationToken) =>
        GateOf(volumeId).EnterAsync(cancellationToken);

    public Task QuiesceAsync(Guid volumeId, Guid pauseId, TimeSpan drainFor, TimeSpan holdAtMost) =>
        GateOf(volumeId).PauseAsync(pauseId, drainFor, holdAtMost);

    public Task ResumeAsync(Guid volumeId, Guid pauseId)
    {
        GateOf(volumeId).Resume(pauseId);
        return Task.CompletedTask;
    }

    /// <summary>Starts the volume paused: snapshots of it were being taken when this client began writing it.</summary>
    public void StartPaused(Guid volumeId, IEnumerable<Guid> pauseIds, TimeSpan holdAtMost)
    {
        foreach (var pauseId in pauseIds)
        {
            GateOf(volumeId).PauseAsync(pauseId, TimeSpan.Zero, holdAtMost).Ignore();
        }
    }

    /// <summary>The clock's timestamp, taken before a registration is sent.</summary>
    public long Timestamp => clock.GetTimestamp();

    /// <summary>
    /// A registration (or renewal) as a writer of the volume, sent at <paramref name="sentAt"/>,
    /// succeeded. From now on writes to the volume are held whenever the last success was sent
    /// more than <see cref="VolumeWriters.UnrenewedHoldAfter"/> ago: a new management activation
    /// may not know this client and would take a snapshot without pausing it.
    /// </summary>
    public void Registered(Guid volumeId, long sentAt) => GateOf(volumeId).Registered(sentAt);

    private Gate GateOf(Guid volumeId) => _gates.GetOrAdd(volumeId, _ => new Gate(clock));

    /// <summary>A write in flight; disposing it lets a pause waiting for it begin.</summary>
    public readonly struct Pass(Gate gate) : IDisposable
    {
        public void Dispose() => gate.Exit();
    }

    internal sealed class Gate(TimeProvider clock)
    {
        private readonly Lock _lock = new();
        private int _inFlight;

        /// <summary>The pauses in force, each with the timestamp at which it ends by itself; writes wait while there is any.</summary>
        private readonly Dictionary<Guid, long> _pauses = [];

        /// <summary>Pauses resumed lately: one whose resume overtook it on the way never begins, nor does one asked for twice.</summary>
        private readonly HashSet<Guid> _resumedIds = [];

        /// <summary>Completes when the last pause in force ends.</summary>
        private TaskCompletionSource? _resumed;

        /// <summary>Completes when the writes in flight have finished; shared by every pause waiting for them.</summary>
        private TaskCompletionSource? _drained;

        /// <summary>When the last successful registration was sent; null before the first (the first write goes on, best effort).</summary>
        private long? _registeredAt;

        /// <summary>Completes at the next successful registration; writes held for a stale one wait for it.</summary>
        private TaskCompletionSource? _renewed;

        public void Registered(long sentAt)
        {
            lock (_lock)
            {
                _registeredAt = Math.Max(_registeredAt ?? sentAt, sentAt);
                _renewed?.TrySetResult();
                _renewed = null;
            }
        }

        public async ValueTask<Pass> EnterAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                lock (_lock)
                {
                    if (_resumed is not null)
                    {
                        wait = _resumed.Task;
                    }
                    else if (_registeredAt is { } sentAt && clock.GetElapsedTime(sentAt) > VolumeWriters.UnrenewedHoldAfter)
                    {
                        _renewed ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        wait = _renewed.Task;
                    }
                    else
                    {
                        _inFlight++;
                        return new Pass(this);
                    }
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
                    _drained = null;
                }
            }
        }

        public async Task PauseAsync(Guid pauseId, TimeSpan drainFor, TimeSpan holdAtMost)
        {
            Task drained;
            bool begun;
            lock (_lock)
            {
                if (_resumedIds.Contains(pauseId))
                {
                    return;
                }
                var until = clock.GetTimestamp() + (long)(holdAtMost.TotalSeconds * clock.TimestampFrequency);
                begun = !_pauses.TryGetValue(pauseId, out var was);
                if (!begun)
                {
                    // Asked for again while its create still runs: it lasts a full hold limit from now (its timer runs already).
                    _pauses[pauseId] = Math.Max(was, until);
                }
                else
                {
                    _pauses[pauseId] = until;
                    if (_pauses.Count == 1)
                    {
                        _resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    }
                }
                if (_inFlight > 0)
                {
                    _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
                drained = _drained?.Task ?? Task.CompletedTask;
            }
            if (begun)
            {
                // Never paused for good: a resume lost with the management service still ends this pause (only this one).
                EndWhenOver(pauseId, holdAtMost);
            }
            try
            {
                await drained.WaitAsync(drainFor);
            }
            catch (TimeoutException)
            {
                // A write stuck longer (its host dead) is not waited for; it may be split.
            }
        }

        public void Resume(Guid pauseId)
        {
            lock (_lock)
            {
                EndLocked(pauseId);
                _resumedIds.Add(pauseId);
            }
            _ = Task.Delay(ResumedIdMemory).ContinueWith(_ =>
            {
                lock (_lock)
                {
                    _resumedIds.Remove(pauseId);
                }
            }, TaskScheduler.Default);
        }

        /// <summary>Ends the pause once its hold limit has passed, looking again later if it was asked for again meanwhile.</summary>
        private void EndWhenOver(Guid pauseId, TimeSpan after) =>
            _ = Task.Delay(after, clock).ContinueWith(_ =>
            {
                TimeSpan left;
                lock (_lock)
                {
                    if (!_pauses.TryGetValue(pauseId, out var until))
                    {
                        return;
                    }
                    left = TimeSpan.FromSeconds((until - clock.GetTimestamp()) / (double)clock.TimestampFrequency);
                    if (left <= TimeSpan.Zero)
                    {
                        EndLocked(pauseId);
                        return;
                    }
                }
                EndWhenOver(pauseId, left);
            }, TaskScheduler.Default);

        /// <summary>Ends one pause; the writes go on if it was the last. False when it was not in force.</summary>
        private bool EndLocked(Guid pauseId)
        {
            if (!_pauses.Remove(pauseId))
            {
                return false;
            }
            if (_pauses.Count == 0)
            {
                _resumed!.TrySetResult();
                _resumed = null;
            }
            return true;
        }
    }
}
