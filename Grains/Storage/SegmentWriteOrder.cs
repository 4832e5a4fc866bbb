namespace OrleansStorage.Storage;

/// <summary>
/// Orders overlapping writes per segment on a primary. A write enters once every earlier write
/// to the same segment that overlaps its byte range (widened to whole 4 KiB checksum blocks) has left (first come, first served), and
/// stays in until every replica applied it. Overlapping writes therefore reach every replica one
/// at a time, in the same order, while writes to disjoint ranges proceed in parallel. There is
/// no global lock.
/// </summary>
public sealed class SegmentWriteOrder
{
    private readonly Dictionary<SegmentAddress, List<InFlight>> _inFlight = [];
    private readonly Lock _gate = new();

    public async ValueTask<IDisposable> EnterAsync(SegmentAddress segment, long offset, long length)
    {
        // Whole checksum blocks: two writes to different bytes of one 4 KiB block both rewrite its
        // checksum, so they must not overlap in time either.
        var end = offset + length;
        offset -= offset % Segments.BlockChecksums.BlockSize;
        length = ((end + Segments.BlockChecksums.BlockSize - 1) / Segments.BlockChecksums.BlockSize * Segments.BlockChecksums.BlockSize) - offset;
        InFlight entry;
        List<Task>? earlier = null;
        lock (_gate)
        {
            if (!_inFlight.TryGetValue(segment, out var list))
            {
                list = [];
                _inFlight[segment] = list;
            }
            foreach (var other in list)
            {
                if (other.Offset < offset + length && offset < other.Offset + other.Length)
                {
                    (earlier ??= []).Add(other.Done.Task);
                }
            }
            // Queued at once, even while it waits: later overlapping writes wait behind it, so a
            // wide request (a whole-segment copy) is not overtaken forever by narrow ones.
            entry = new InFlight(this, segment, offset, length);
            list.Add(entry);
        }
        if (earlier is not null)
        {
            await Task.WhenAll(earlier).ConfigureAwait(true);
        }
        return entry;
    }

    public int InFlightCount
    {
        get
        {
            lock (_gate)
            {
                return _inFlight.Values.Sum(l => l.Count);
            }
        }
    }

    private void Leave(InFlight entry)
    {
        lock (_gate)
        {
            if (_inFlight.TryGetValue(entry.Segment, out var list))
            {
                list.Remove(entry);
                if (list.Count == 0)
                {
                    _inFlight.Remove(entry.Segment);
                }
            }
        }
        entry.Done.TrySetResult();
    }

    private sealed class InFlight(SegmentWriteOrder owner, SegmentAddress segment, long offset, long length) : IDisposable
    {
        public SegmentAddress Segment { get; } = segment;
        public long Offset { get; } = offset;
        public long Length { get; } = length;

        // Continuations run asynchronously so a finishing write never runs a waiter inline.
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Dispose() => owner.Leave(this);
    }
}
