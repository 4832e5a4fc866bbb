using OrleansStorage.Logging;

namespace OrleansStorage.Storage;

/// <summary>
/// The background scrub: once per <c>ScrubInterval</c>, this host checks every segment it leads
/// (that it holds data of) on every acting replica, one segment at a time under the segment's
/// write turn, and repairs what it finds, as <c>ostor volume scrub --deep</c> does. Paced to
/// <c>ScrubBytesPerSecond</c>, and paused while clients are doing I/O on this host or on any other
/// replica of the segment next in turn (the scrub reads every replica).
/// </summary>
public sealed partial class StorageServerGrain
{
    private static readonly TimeSpan ScrubTick = TimeSpan.FromMilliseconds(100);
    private readonly Dictionary<Guid, VolumeScrubRecord> _scrubs = [];
    private long _lastClientRequest;
    private ScrubPass? _scrubPass;
    private DateTimeOffset _nextScrubPass;
    private BandwidthLimiter? _scrubBandwidth;

    private void StartScrub()
    {
        if (options.Value.ScrubBytesPerSecond <= 0)
        {
            return;
        }
        _scrubBandwidth = new BandwidthLimiter(options.Value.ScrubBytesPerSecond, clock);
        _nextScrubPass = clock.GetUtcNow() + ScrubTick;
        this.RegisterGrainTimer(ScrubNextAsync, new GrainTimerCreationOptions(ScrubTick, ScrubTick) { Interleave = true });
    }

    /// <summary>One timer tick: scrubs the next segment of the pass, if the pace and the clients allow.</summary>
    private async Task ScrubNextAsync()
    {
        if (_deactivating || _map.IsUnformed || clock.GetElapsedTime(_lastClientRequest) < options.Value.ScrubIdleAfterClientIo)
        {
            return;
        }
        if (_scrubPass is null)
        {
            if (clock.GetUtcNow() < _nextScrubPass)
            {
                return;
            }
            _scrubPass = ScrubPass.Plan(_map, _hostId, store, clock.GetUtcNow());
            _nextScrubPass = clock.GetUtcNow() + options.Value.ScrubInterval;
        }
        var pass = _scrubPass;
        if (pass.Peek() is not { } segment)
        {
            foreach (var (volumeId, tally) in pass.Tallies)
            {
                _scrubs[volumeId] = new VolumeScrubRecord(volumeId, clock.GetUtcNow(), tally.Segments, tally.Repaired, tally.Lost, pass.Started, tally.BytesChecked);
            }
            var seconds = Math.Max((clock.GetUtcNow() - pass.Started).TotalSeconds, 0.001);
            var bytes = pass.Tallies.Values.Sum(t => t.BytesChecked);
            Log.ScrubPassFinished(logger, _hostId, pass.Tallies.Values.Sum(t => t.Segments), bytes >> 20, seconds, bytes / seconds / (1 << 20),
                pass.Tallies.Values.Sum(t => t.Repaired), pass.Tallies.Values.Sum(t => t.Lost));
            _scrubPass = null;
            return;
        }
        var volume = _map.FindVolume(segment.VolumeId);
        var group = volume?.PlacementGroupOf(segment.SegmentIndex);
        if (volume is null || group is null || group.Primary != _hostId)
        {
            pass.Advance();
            return; // the map moved on: the segment is another host's to scrub now
        }
        try
        {
            foreach (var hostId in group.Replicas.Skip(1))
            {
                if (await Server(hostId).TimeSinceClientRequestAsync() < options.Value.ScrubIdleAfterClientIo)
                {
                    return; // the same segment again at a later tick
                }
            }
            pass.Advance();
            SegmentScrub scrub;
            using (await _writeOrder.EnterAsync(segment, 0, volume.SegmentSizeBytes))
            {
                var current = _map.FindVolume(segment.VolumeId)?.PlacementGroupOf(segment.SegmentIndex);
                if (current is null || current.Primary != _hostId)
                {
                    return;
                }
                scrub = await ScrubUnderTurnAsync(volume, current, segment, repair: true);
            }
            pass.Count(segment.VolumeId, scrub);
            await _scrubBandwidth!.WaitAsync(scrub.BytesChecked);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // A replica down or the map moving: this segment waits for the next pass.
            if (pass.Peek() == segment)
            {
                pass.Advance();
            }
            Log.ScrubFailed(logger, ex, _hostId, volume.Name, segment.SegmentIndex);
        }
    }

    /// <summary>The segments one pass visits, in order, and what it found per volume so far.</summary>
    private sealed class ScrubPass(List<SegmentAddress> segments, Dictionary<Guid, ScrubTally> tallies, DateTimeOffset started)
    {
        private int _next;

        public DateTimeOffset Started { get; } = started;

        public IReadOnlyDictionary<Guid, ScrubTally> Tallies => tallies;

        /// <summary>Every segment of every group this host leads that it holds data of; every volume it leads gets a record, data or not.</summary>
        public static ScrubPass Plan(Maps.ClusterMap map, string hostId, Segments.SegmentStore store, DateTimeOffset now)
        {
            var segments = new List<SegmentAddress>();
            var tallies = new Dictionary<Guid, ScrubTally>();
            foreach (var volume in map.Volumes)
            {
                var led = volume.PlacementGroups.Where(pg => pg.IsAvailable && pg.Primary == hostId).Select(pg => pg.Index).ToHashSet();
                if (led.Count == 0)
                {
                    continue;
                }
                tallies[volume.VolumeId] = new ScrubTally();
                segments.AddRange(store.ListSegments(volume.VolumeId)
                    .Where(index => led.Contains(volume.PlacementGroupOf(index).Index))
                    .Order()
                    .Select(index => new SegmentAddress(volume.VolumeId, index)));
            }
            return new ScrubPass(segments, tallies, now);
        }

        /// <summary>The segment to scrub next; it stays next until <see cref="Advance"/>.</summary>
        public SegmentAddress? Peek() => _next < segments.Count ? segments[_next] : null;

        public void Advance() => _next++;

        public void Count(Guid volumeId, SegmentScrub scrub)
        {
            if (tallies.TryGetValue(volumeId, out var tally))
            {
                tally.Segments++;
                tally.Repaired += scrub.BlocksRepaired;
                tally.Lost += scrub.BlocksLost;
                tally.BytesChecked += scrub.BytesChecked;
            }
        }
    }

    private sealed class ScrubTally
    {
        public long Segments { get; set; }
        public long Repaired { get; set; }
        public long Lost { get; set; }
        public long BytesChecked { get; set; }
    }
}
