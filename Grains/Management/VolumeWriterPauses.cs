namespace OrleansStorage.Management;

/// <summary>
/// The management service's side of the pauses of a volume's writers around its snapshots
/// (docs/snapshots.md): which clients write each volume, which creates' pauses are in force, and
/// whether this activation can know every writer of a volume yet. One per activation, in memory.
/// Registrations are not persisted (they are renewed every <see cref="VolumeWriters.RenewInterval"/>
/// and would cost a database write each): after a failover every live writer registers again
/// within <see cref="VolumeWriters.AllKnownAfter"/>, and until then a volume that existed before
/// this activation may have writers it does not know.
/// </summary>
public sealed class VolumeWriterPauses
{
    private readonly TimeProvider _clock;
    private readonly long _startedAt;
    private readonly HashSet<Guid> _volumesBefore;
    private readonly TimeSpan _holdLimit;
    private readonly Dictionary<(string Volume, GrainId Writer), (long Until, IVolumeWriterObserver Observer)> _writers = [];
    private readonly Dictionary<Guid, (string Volume, long Until)> _pauses = [];

    /// <summary>The writers each pause in force was asked of: its resume reaches them even once their registration ran out or was taken back.</summary>
    private readonly Dictionary<Guid, Dictionary<GrainId, IVolumeWriterObserver>> _asked = [];

    /// <param name="volumesBefore">The volumes of the map this activation loaded: only they can have writers it has not heard from.</param>
    /// <param name="holdLimit">How long a paused writer waits for its resume before it goes on by itself.</param>
    public VolumeWriterPauses(TimeProvider clock, IEnumerable<Guid> volumesBefore, TimeSpan holdLimit)
    {
        _clock = clock;
        _startedAt = clock.GetTimestamp();
        _volumesBefore = [.. volumesBefore];
        _holdLimit = holdLimit;
    }

    /// <summary>
    /// How long until this activation has heard from every live writer of the volume: zero for a
    /// volume it created (nobody wrote it before), and for any once
    /// <see cref="VolumeWriters.AllKnownAfter"/> has passed since it started.
    /// </summary>
    public TimeSpan UnknownWritersFor(Guid volumeId)
    {
        if (!_volumesBefore.Contains(volumeId))
        {
            return TimeSpan.Zero;
        }
        var left = VolumeWriters.AllKnownAfter - _clock.GetElapsedTime(_startedAt);
        if (left > TimeSpan.Zero)
        {
            return left;
        }
        _volumesBefore.Clear(); // every writer has registered by now, whatever the volume
        return TimeSpan.Zero;
    }

    /// <summary>
    /// Registers (or renews) a writer of the volume until <see cref="VolumeWriters.LeaseTime"/>
    /// from now, or with <paramref name="watching"/> false forgets it at once. Returns the pauses
    /// of the volume in force, by which a new writer starts paused.
    /// </summary>
    public Guid[] Register(string volumeName, GrainId writerId, IVolumeWriterObserver writer, bool watching)
    {
        var now = _clock.GetTimestamp();
        foreach (var stale in _writers.Where(w => w.Value.Until <= now).Select(w => w.Key).ToList())
        {
            _writers.Remove(stale);
        }
        if (!watching)
        {
            // A closing client: a snapshot must not wait on it until its registration runs out.
            _writers.Remove((volumeName, writerId));
            return [];
        }
        _writers[(volumeName, writerId)] = (now + Ticks(VolumeWriters.LeaseTime), writer);
        return InForce(volumeName);
    }

    /// <summary>The volume's writers whose registration has not run out.</summary>
    public List<IVolumeWriterObserver> WritersOf(string volumeName) => [.. Registered(volumeName).Select(w => w.Observer)];

    /// <summary>The volume's writers to ask for the pause (<see cref="WritersOf"/>), remembered for its resume (<see cref="End"/>).</summary>
    public List<IVolumeWriterObserver> Ask(string volumeName, Guid pauseId)
    {
        var writers = Registered(volumeName);
        if (_pauses.ContainsKey(pauseId))
        {
            var asked = _asked.TryGetValue(pauseId, out var known) ? known : _asked[pauseId] = [];
            foreach (var (id, observer) in writers)
            {
                asked[id] = observer;
            }
        }
        return [.. writers.Select(w => w.Observer)];
    }

    private List<(GrainId Id, IVolumeWriterObserver Observer)> Registered(string volumeName)
    {
        var now = _clock.GetTimestamp();
        return [.. _writers.Where(w => w.Key.Volume == volumeName && w.Value.Until > now).Select(w => (w.Key.Writer, w.Value.Observer))];
    }

    /// <summary>A create pauses the volume's writers: the pause's id, in force until <see cref="End"/> or the hold limit.</summary>
    public Guid Begin(string volumeName)
    {
        var now = _clock.GetTimestamp();
        foreach (var over in _pauses.Where(p => p.Value.Until <= now).Select(p => p.Key).ToList())
        {
            _pauses.Remove(over);
            _asked.Remove(over);
        }
        var pauseId = Guid.NewGuid();
        _pauses[pauseId] = (volumeName, now + Ticks(_holdLimit));
        return pauseId;
    }

    /// <summary>A create under way asked for its pause again: in force a full hold limit from now, unless it ended.</summary>
    public void Extend(Guid pauseId)
    {
        if (_pauses.TryGetValue(pauseId, out var pause))
        {
            _pauses[pauseId] = (pause.Volume, _clock.GetTimestamp() + Ticks(_holdLimit));
        }
    }

    /// <summary>
    /// Ends one pause, and no other. An unknown or ended one is no error: resumes may repeat.
    /// Returns the writers to tell: the volume's registered writers, and every writer the pause was
    /// asked of, also one whose registration ran out (or was taken back) while the create ran: it
    /// would otherwise hold its writes until its hold limit.
    /// </summary>
    public List<IVolumeWriterObserver> End(string volumeName, Guid pauseId)
    {
        _pauses.Remove(pauseId);
        var tell = _asked.Remove(pauseId, out var asked) ? asked : [];
        foreach (var (id, observer) in Registered(volumeName))
        {
            tell[id] = observer;
        }
        return [.. tell.Values];
    }

    /// <summary>The volume's pauses in force: begun, not ended, and not past the hold limit (their writers went on by then).</summary>
    public Guid[] InForce(string volumeName)
    {
        var now = _clock.GetTimestamp();
        return [.. _pauses.Where(p => p.Value.Volume == volumeName && p.Value.Until > now).Select(p => p.Key)];
    }

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * _clock.TimestampFrequency);
}
