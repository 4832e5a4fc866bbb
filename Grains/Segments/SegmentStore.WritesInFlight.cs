using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// Which segments have a data write between its dirty mark and its end. A flush may overlap such a
/// write (the Linux NBD client sends FLUSH with writes in flight): it owes the write nothing, but it
/// must not mark the segment clean, or the next flush, which does owe it, syncs nothing.
/// </summary>
public sealed partial class SegmentStore
{
    // Data writes begun and not yet ended, per segment. Under _gate.
    private readonly Dictionary<SegmentAddress, int> _writesInFlight = [];

    /// <summary>
    /// Marks the segment dirty and its intent durable, as every change does, and counts the write
    /// in flight until the returned scope ends. Dispose it after the bytes and checksums are written.
    /// </summary>
    private async ValueTask<ChangeInFlight> BeginDataWriteAsync(SegmentAddress segment)
    {
        Task intentMarked;
        lock (_gate)
        {
            intentMarked = MarkDirty(segment); // first: if it throws, nothing is counted
            _writesInFlight[segment] = _writesInFlight.GetValueOrDefault(segment) + 1;
        }
        try
        {
            await intentMarked.ConfigureAwait(false);
        }
        catch
        {
            EndDataWrite(segment);
            throw;
        }
        return new ChangeInFlight(this, segment);
    }

    /// <summary>
    /// A change that spans more than one call: the primary's write from the version it takes to the
    /// end of its local write (which may wait long, repairing its own copy from a replica, while
    /// the replicas already hold the write at that version). Until the scope ends no flush calls
    /// the segment clean, so its intent stays and a crash leaves it suspect.
    /// </summary>
    public ValueTask<ChangeInFlight> BeginChangeAsync(SegmentAddress segment) => BeginDataWriteAsync(segment);

    /// <summary>Whether any data write is in flight (a shutdown with one is not clean). Under _gate.</summary>
    private bool AnyWriteInFlight => _writesInFlight.Count > 0;

    /// <summary>
    /// The write's bytes are in the file (or it failed): a new generation, so a flush that took the
    /// segment's generation while the write was in flight leaves it dirty for the next one.
    /// </summary>
    private void EndDataWrite(SegmentAddress segment)
    {
        lock (_gate)
        {
            _dirty[segment] = ++_writeGeneration;
            _cleanSince.Remove(segment);
            var left = _writesInFlight[segment] - 1;
            if (left == 0)
            {
                _writesInFlight.Remove(segment);
            }
            else
            {
                _writesInFlight[segment] = left;
            }
        }
    }

    /// <summary>Whether a flush that synced <paramref name="segment"/> at <paramref name="generation"/> may call it clean. Under _gate.</summary>
    private bool SyncedEverything(SegmentAddress segment, long generation) =>
        !_writesInFlight.ContainsKey(segment) && (_dirty.TryGetValue(segment, out var current) ? current : -1) == generation;

    /// <summary>A change counted in flight on its segment until disposed.</summary>
    public readonly struct ChangeInFlight : IDisposable
    {
        private readonly SegmentStore _store;
        private readonly SegmentAddress _segment;

        internal ChangeInFlight(SegmentStore store, SegmentAddress segment)
        {
            _store = store;
            _segment = segment;
        }

        public void Dispose() => _store?.EndDataWrite(_segment);
    }
}
