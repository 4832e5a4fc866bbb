using OrleansStorage.Maps;

namespace OrleansStorage.Leases;

/// <summary>
/// A storage server's side of its primary lease: whether it may serve a group as its primary
/// now. It may when it holds an unexpired lease granted for the epoch of its map, and every
/// earlier primary of the group that may still hold a lease has run out (docs/failures.md,
/// "Read leases"). All times are this host's monotonic clock.
/// </summary>
public sealed class PrimaryLease(string hostId, LeaseOptions options, TimeProvider clock)
{
    /// <summary>
    /// Waits for earlier primaries that management's activation <see cref="_depositionWaitsGrantor"/>
    /// knows of: each of its grants replaces them (one that gave its lease up is gone).
    /// </summary>
    private readonly Dictionary<(Guid VolumeId, int GroupIndex), long> _depositionWaits = [];
    private Guid _depositionWaitsGrantor;

    /// <summary>
    /// Waits for leases the granting activation cannot know of (granted before it, or depositions
    /// an earlier activation told of): they only run out.
    /// </summary>
    private readonly Dictionary<(Guid VolumeId, int GroupIndex), long> _unknownWaits = [];
    private long _epoch = -1;
    private long _validUntil;
    private ClusterMap? _grantedOn;

    /// <summary>Taken just before a lease request is sent: the lease counts from here, never from the (later) answer.</summary>
    public long Now() => clock.GetTimestamp();

    /// <summary>The epoch of the lease held now, or -1.</summary>
    public long Epoch => Now() < _validUntil ? _epoch : -1;

    /// <summary>
    /// Takes a grant made on <paramref name="map"/> (same epoch) for a request sent at
    /// <paramref name="sentAt"/>. Groups this host leads now but has not led without a break since
    /// the map of the lease it held until now (<see cref="PlacementGroup.PrimarySinceEpoch"/>) wait
    /// out leases management cannot account for, except the groups of volumes
    /// management created since: no such lease covers them. Waits an earlier activation gave are
    /// kept until they run out: the grantor knows nothing of them, so its grants cannot lift them.
    /// </summary>
    public void Apply(LeaseGrant grant, ClusterMap map, long sentAt)
    {
        if (!grant.Granted || grant.Epoch != map.Epoch)
        {
            throw new ArgumentException($"grant for epoch {grant.Epoch} (granted: {grant.Granted}) does not fit the map at epoch {map.Epoch}", nameof(grant));
        }
        var now = Now();
        var held = now < _validUntil ? _grantedOn : null;
        if (grant.Grantor != _depositionWaitsGrantor)
        {
            // Management moved: the old activation may be gone with the depositions it recorded,
            // and the new one cannot tell when those deposed primaries gave their leases up.
            foreach (var (group, until) in _depositionWaits)
            {
                Delay(_unknownWaits, group, until);
            }
            _depositionWaitsGrantor = grant.Grantor;
        }
        _depositionWaits.Clear();
        foreach (var wait in grant.Waits)
        {
            Delay(_depositionWaits, (wait.VolumeId, wait.GroupIndex), now + Ticks(options.Stretch(wait.Remaining)));
        }
        if (grant.UnknownLeasesFor > TimeSpan.Zero)
        {
            var until = now + Ticks(options.Stretch(grant.UnknownLeasesFor));
            var created = grant.VolumesCreatedSince ?? [];
            foreach (var volume in map.Volumes)
            {
                if (Array.IndexOf(created, volume.VolumeId) >= 0)
                {
                    continue;
                }
                var before = held?.FindVolume(volume.VolumeId);
                foreach (var group in volume.PlacementGroups)
                {
                    // Led without a break since a map it held a lease on: the held map alone would
                    // miss a move away and back in epochs this host never renewed at.
                    var ledBefore = before is not null && group.Index < before.PlacementGroups.Length
                        && before.PlacementGroups[group.Index].Primary == hostId
                        && group.PrimarySinceEpoch > 0 && group.PrimarySinceEpoch <= held!.Epoch;
                    if (group.Primary == hostId && !ledBefore)
                    {
                        Delay(_unknownWaits, (volume.VolumeId, group.Index), until);
                    }
                }
            }
        }
        _epoch = grant.Epoch;
        _validUntil = sentAt + Ticks(grant.Duration);
        _grantedOn = map;
        foreach (var key in _unknownWaits.Where(e => e.Value <= now).Select(e => e.Key).ToList())
        {
            _unknownWaits.Remove(key);
        }
    }

    /// <summary>
    /// How long until this host may serve the group as the primary of <paramref name="map"/>:
    /// zero when it may now, null when it holds no lease for the map's epoch (renew first).
    /// </summary>
    public TimeSpan? WaitBeforeServing(ClusterMap map, Guid volumeId, int groupIndex)
    {
        var now = Now();
        if (_epoch != map.Epoch || now >= _validUntil)
        {
            return null;
        }
        if (_depositionWaits.Count == 0 && _unknownWaits.Count == 0)
        {
            return TimeSpan.Zero; // the steady state: every request of a primary passes here
        }
        var from = Math.Max(_depositionWaits.GetValueOrDefault((volumeId, groupIndex)), _unknownWaits.GetValueOrDefault((volumeId, groupIndex)));
        return from > now ? Span(from - now) : TimeSpan.Zero;
    }

    private static void Delay(Dictionary<(Guid, int), long> waits, (Guid, int) group, long until) =>
        waits[group] = Math.Max(waits.GetValueOrDefault(group), until);

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * clock.TimestampFrequency);

    private TimeSpan Span(long ticks) => TimeSpan.FromSeconds((double)ticks / clock.TimestampFrequency);
}
