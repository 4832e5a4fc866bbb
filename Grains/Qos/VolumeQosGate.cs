using OrleansStorage.Errors;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Qos;

/// <summary>
/// Holds each volume's I/O on this host to its QoS limits. A host enforces the part of a volume's
/// limits that matches the share of its placement groups it leads (every client request goes to
/// a group's primary), so the hosts together hold the volume to its limits whichever clients send
/// the requests. One pacer per volume and kind (<see cref="BandwidthLimiter"/>: each request books
/// its time at the rate, in arrival order) lets <see cref="Burst"/>'s worth through at once.
/// System.Threading.RateLimiting's token buckets were tried first and ran under their rate (1,876
/// KiB/s of a 2,048 KiB/s limit under fio): their timer adds a period's tokens per tick and loses
/// the time a tick fires late.
/// </summary>
public sealed class VolumeQosGate(string hostId, TimeProvider time)
{
    /// <summary>How much of a limit may pass at once after a quiet spell.</summary>
    public static readonly TimeSpan Burst = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// How far ahead requests may be booked before more are turned away to retry: well under a
    /// client's request timeout (5 s), so that no request waits here until its caller gave up.
    /// </summary>
    public static readonly TimeSpan MaxBacklog = TimeSpan.FromSeconds(2);

    private readonly Lock _gate = new();
    private Dictionary<Guid, VolumePacers> _volumes = [];
    private long _delayed;

    /// <summary>Requests that had to wait for their volume's limits since this host started.</summary>
    public long Delayed => Interlocked.Read(ref _delayed);

    /// <summary>Follows the map: pacers for every limited volume this host leads groups of, rebuilt only where the limits or the share changed.</summary>
    public void Adopt(ClusterMap map)
    {
        lock (_gate)
        {
            var next = new Dictionary<Guid, VolumePacers>();
            foreach (var volume in map.Volumes)
            {
                var led = volume.PlacementGroups.Count(g => g.Replicas.Length > 0 && g.Replicas[0] == hostId);
                if (volume.Qos is not { IsUnlimited: false } qos || led == 0)
                {
                    continue;
                }
                var share = (double)led / volume.PlacementGroups.Length;
                next[volume.VolumeId] = _volumes.TryGetValue(volume.VolumeId, out var current) && current.Qos == qos && current.Share == share
                    ? current
                    : new VolumePacers(qos, share, time);
            }
            _volumes = next;
        }
    }

    /// <summary>Waits until the volume's limits on this host let one operation of <paramref name="bytes"/> through.</summary>
    public async ValueTask WaitAsync(Guid volumeId, bool write, long bytes)
    {
        VolumePacers? pacers;
        lock (_gate)
        {
            _volumes.TryGetValue(volumeId, out pacers);
        }
        if (pacers is not null && await pacers.WaitAsync(write, bytes))
        {
            Interlocked.Increment(ref _delayed);
        }
    }

    /// <summary>One volume's pacers on this host: operations and bytes, reads and writes apart; null where there is no limit.</summary>
    private sealed class VolumePacers(VolumeQos qos, double share, TimeProvider time)
    {
        private readonly BandwidthLimiter? _readOps = Pacer(qos.ReadIops * share, time);
        private readonly BandwidthLimiter? _writeOps = Pacer(qos.WriteIops * share, time);
        private readonly BandwidthLimiter? _readBytes = Pacer(qos.ReadBytesPerSecond * share, time);
        private readonly BandwidthLimiter? _writeBytes = Pacer(qos.WriteBytesPerSecond * share, time);

        public VolumeQos Qos { get; } = qos;

        public double Share { get; } = share;

        /// <summary>True if the request had to wait; throws when too much waits already.</summary>
        public async ValueTask<bool> WaitAsync(bool write, long bytes)
        {
            // Both booked, then one wait for the later: an operation needs both.
            var wait = TimeSpan.Zero;
            if ((write ? _writeOps : _readOps) is { } ops)
            {
                wait = Book(ops, 1);
            }
            if ((write ? _writeBytes : _readBytes) is { } bytesPacer && bytes > 0)
            {
                wait = TimeSpan.FromTicks(Math.Max(wait.Ticks, Book(bytesPacer, bytes).Ticks));
            }
            if (wait <= TimeSpan.Zero)
            {
                return false;
            }
            await Task.Delay(wait, time);
            return true;
        }

        private TimeSpan Book(BandwidthLimiter pacer, double units) =>
            pacer.TryBook(units, MaxBacklog, out var wait)
                ? wait
                : throw new VolumeThrottledException(Qos, wait);

        private static BandwidthLimiter? Pacer(double perSecond, TimeProvider time) => perSecond > 0 ? new BandwidthLimiter(perSecond, time, Burst) : null;
    }
}
