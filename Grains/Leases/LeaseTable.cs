using OrleansStorage.Maps;

namespace OrleansStorage.Leases;

/// <summary>
/// The management service's side of primary leases: when each host's lease may last until, and
/// which groups changed primary while the old primary may still be serving. One per activation of
/// the management service, in memory: what it cannot know (leases granted by an earlier
/// activation, or by one that is cut off but still running) is bounded by
/// <see cref="_unknownLeasesUntil"/> (docs/failures.md, "Read leases").
/// </summary>
public sealed class LeaseTable
{
    private readonly LeaseOptions _options;
    private readonly TimeProvider _clock;
    private readonly Dictionary<string, long> _grantedUntil = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _adoptedEpoch = new(StringComparer.Ordinal);
    private readonly List<Deposition> _depositions = [];
    private readonly HashSet<(Guid VolumeId, int GroupIndex)> _released = [];

    /// <summary>
    /// Volumes this activation created while leases it cannot know of may still run: none of them
    /// covers these volumes' groups, so their primaries need not wait (told with every grant until
    /// <see cref="_unknownLeasesUntil"/>, then forgotten).
    /// </summary>
    private readonly HashSet<Guid> _createdHere = [];

    /// <summary>
    /// Leases this activation did not grant end before this. Another activation grants only after
    /// reading that the database still holds the state it loaded, so once this one has written
    /// the state (<see cref="Fenced"/>), no lease of theirs starts later.
    /// </summary>
    private long _unknownLeasesUntil;
    private bool _fenced;

    /// <summary>Names this activation in its grants: a host drops a wait only on a grant of the activation that gave it.</summary>
    public Guid GrantorId { get; } = Guid.NewGuid();

    public LeaseTable(LeaseOptions options, TimeProvider clock)
    {
        _options = options;
        _clock = clock;
        _unknownLeasesUntil = _clock.GetTimestamp() + Ticks(_options.Stretch(_options.Duration));
    }

    /// <summary>A group whose primary changed while <see cref="HostId"/> may still hold a lease it got as that group's primary.</summary>
    private sealed record Deposition(Guid VolumeId, int GroupIndex, string HostId, long Epoch, long Until);

    /// <summary>Depositions not yet settled, for tests and status.</summary>
    public int Pending => _depositions.Count;

    /// <summary>
    /// This activation has written the state: any other activation's lease was granted before
    /// that, and ends within one (stretched) lease from now.
    /// </summary>
    public void Fenced()
    {
        _fenced = true;
        _unknownLeasesUntil = Math.Max(_unknownLeasesUntil, _clock.GetTimestamp() + Ticks(_options.Stretch(_options.Duration)));
    }

    /// <summary>
    /// A new map is visible. Every group whose primary changed records its old primary's lease,
    /// unless that host has already adopted the new map (it then rejects the old epoch) or its
    /// lease has run out.
    /// </summary>
    public void MapChanged(ClusterMap previous, ClusterMap next)
    {
        if (!_fenced)
        {
            Fenced();
        }
        var now = _clock.GetTimestamp();
        if (now < _unknownLeasesUntil)
        {
            foreach (var volume in next.Volumes)
            {
                if (previous.FindVolume(volume.VolumeId) is null)
                {
                    _createdHere.Add(volume.VolumeId);
                }
            }
        }
        foreach (var volume in previous.Volumes)
        {
            // A deleted volume has no primary any more: nobody serves it, at any epoch.
            if (next.FindVolume(volume.VolumeId) is not { } after)
            {
                continue;
            }
            foreach (var group in volume.PlacementGroups)
            {
                if (!group.IsAvailable || group.Index >= after.PlacementGroups.Length
                    || after.PlacementGroups[group.Index].Primary == group.Primary)
                {
                    continue;
                }
                var until = Math.Max(_grantedUntil.GetValueOrDefault(group.Primary), _unknownLeasesUntil);
                if (until > now && _adoptedEpoch.GetValueOrDefault(group.Primary) < next.Epoch)
                {
                    _depositions.Add(new Deposition(volume.VolumeId, group.Index, group.Primary, next.Epoch, until));
                }
            }
        }
    }

    /// <summary>
    /// Grants (or renews) a lease on <paramref name="map"/>, the map the database holds now. A host
    /// whose map is older gets the epoch to catch up to instead.
    /// </summary>
    public LeaseGrant Grant(LeaseRequest request, ClusterMap map)
    {
        var now = _clock.GetTimestamp();
        if (request.MapEpoch > _adoptedEpoch.GetValueOrDefault(request.HostId))
        {
            _adoptedEpoch[request.HostId] = request.MapEpoch;
        }
        _depositions.RemoveAll(d =>
        {
            if (_adoptedEpoch.GetValueOrDefault(d.HostId) >= d.Epoch)
            {
                _released.Add((d.VolumeId, d.GroupIndex));
                return true;
            }
            return d.Until <= now;
        });
        if (request.MapEpoch != map.Epoch)
        {
            return new LeaseGrant(map.Epoch, false, TimeSpan.Zero, [], TimeSpan.Zero, Grantor: GrantorId);
        }
        _grantedUntil[request.HostId] = now + Ticks(_options.Stretch(_options.Duration));
        var waits = new Dictionary<(Guid, int), long>();
        foreach (var deposition in _depositions)
        {
            if (deposition.HostId == request.HostId
                || map.FindVolume(deposition.VolumeId) is not { } volume
                || deposition.GroupIndex >= volume.PlacementGroups.Length
                || volume.PlacementGroups[deposition.GroupIndex].Primary != request.HostId)
            {
                continue;
            }
            var key = (deposition.VolumeId, deposition.GroupIndex);
            waits[key] = Math.Max(waits.GetValueOrDefault(key), deposition.Until - now);
        }
        var unknownFor = Math.Max(0, _unknownLeasesUntil - now);
        if (unknownFor == 0)
        {
            _createdHere.Clear();
        }
        return new LeaseGrant(
            map.Epoch,
            true,
            _options.Duration,
            [.. waits.Select(w => new GroupWait(w.Key.Item1, w.Key.Item2, Span(w.Value)))],
            Span(unknownFor),
            unknownFor > 0 ? [.. _createdHere.Where(id => map.FindVolume(id) is not null)] : null,
            GrantorId);
    }

    /// <summary>
    /// The primaries of groups whose earlier primary gave its lease up since the last call (it
    /// adopted the map that deposed it): told at once, they renew and serve without waiting for
    /// their next renewal. A group that another deposition still holds up is told again later.
    /// </summary>
    public List<string> TakeReleased(ClusterMap map)
    {
        var leaders = new List<string>();
        foreach (var (volumeId, groupIndex) in _released)
        {
            if (map.FindVolume(volumeId) is { } volume && groupIndex < volume.PlacementGroups.Length
                && volume.PlacementGroups[groupIndex].IsAvailable)
            {
                leaders.Add(volume.PlacementGroups[groupIndex].Primary);
            }
        }
        _released.Clear();
        return [.. leaders.Distinct(StringComparer.Ordinal)];
    }

    /// <summary>
    /// How much longer <paramref name="hostId"/> may serve an epoch before <paramref name="epoch"/>:
    /// zero once it has adopted that epoch (it rejects older ones) or its lease has run out.
    /// </summary>
    public TimeSpan OlderEpochsServedFor(string hostId, long epoch)
    {
        if (_adoptedEpoch.GetValueOrDefault(hostId) >= epoch)
        {
            return TimeSpan.Zero;
        }
        var until = Math.Max(_grantedUntil.GetValueOrDefault(hostId), _unknownLeasesUntil);
        return Span(Math.Max(0, until - _clock.GetTimestamp()));
    }

    /// <summary>The host said it holds the map of <paramref name="epoch"/> (it answered a call made at that epoch).</summary>
    public void Adopted(string hostId, long epoch)
    {
        if (epoch > _adoptedEpoch.GetValueOrDefault(hostId))
        {
            _adoptedEpoch[hostId] = epoch;
        }
    }

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * _clock.TimestampFrequency);

    private TimeSpan Span(long ticks) => TimeSpan.FromSeconds((double)ticks / _clock.TimestampFrequency);
}
