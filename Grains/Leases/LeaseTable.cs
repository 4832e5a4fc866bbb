using OrleansStorage.Maps;

namespace OrleansStorage.Leases;

/// <summary>
/// The management service's side of primary leases: when each host's lease may last until, and
/// which groups changed primary while the old primary may still be serving. One per activation of
/// the management service, in memory: what it cannot know (leases granted by an earlier
/// activation, or by one that is cut off but still running) is bounded by
/// <see cref="UnknownLeasesUntil"/> (docs/failures.md, "Read leases").
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
    /// <see cref="UnknownLeasesUntil"/>, then forgotten).
    /// </summary>
    private readonly HashSet<Guid> _createdHere = [];

    /// <summary>
    /// Until this activation fences the stored state, the leases it did not grant end before this:
    /// nothing was stored, so no earlier activation granted one on a map with volumes.
    /// </summary>
    private readonly long _unfencedUntil;

    /// <summary>When this activation wrote the state (<see cref="Fenced"/>), or <see cref="long.MinValue"/>.</summary>
    private long _fencedAt = long.MinValue;

    /// <summary>Nothing was stored before this activation's first write: no earlier one granted a lease on a volume.</summary>
    private bool _alone;

    /// <summary>Names this activation in its grants: a host drops a wait only on a grant of the activation that gave it.</summary>
    public Guid GrantorId { get; } = Guid.NewGuid();

    /// <summary>The hosts' echoes of this activation's grants: whether it may grant without the database, and when older activations stopped granting.</summary>
    public ActivationWitnesses Witnesses { get; }

    public LeaseTable(LeaseOptions options, TimeProvider clock)
    {
        _options = options;
        _clock = clock;
        _unfencedUntil = _clock.GetTimestamp() + Ticks(_options.Stretch(_options.Duration));
        Witnesses = new ActivationWitnesses(options, clock, GrantorId);
    }

    /// <summary>
    /// A group whose primary changed while <see cref="HostId"/> may still hold a lease it got as
    /// that group's primary from this activation until <see cref="GrantedUntil"/>, or from an
    /// earlier one until <see cref="UnknownLeasesUntil"/> (which shrinks once hosts witness this one).
    /// </summary>
    private sealed record Deposition(Guid VolumeId, int GroupIndex, string HostId, long Epoch, long GrantedUntil)
    {
        public long Until(long unknownUntil) => Math.Max(GrantedUntil, unknownUntil);
    }

    /// <summary>
    /// Leases this activation did not grant end before this. An earlier activation granted either
    /// after reading that the database still held the state it loaded (so before this one's fence
    /// write, and its leases end within one lease of it), or on its hosts' echoes alone: then until
    /// a majority of hosts went over to this activation and a witness window passed, and never past
    /// <see cref="LeaseOptions.WitnessedGrantLimit"/> after its last read of the database (which
    /// came before this fence). Every bound is stretched for clock drift.
    /// </summary>
    private long UnknownLeasesUntil()
    {
        if (_fencedAt == long.MinValue)
        {
            return _unfencedUntil;
        }
        var confirmedGrants = Math.Max(_unfencedUntil, _fencedAt + Ticks(_options.Stretch(_options.Duration)));
        if (_alone || !_options.GrantsOnWitnesses)
        {
            return confirmedGrants;
        }
        var capped = _fencedAt + Ticks(_options.Stretch(_options.WitnessedGrantLimit + _options.Duration));
        return Witnesses.IsEstablished
            ? Math.Max(confirmedGrants, Math.Min(capped, Witnesses.EstablishedAt + Ticks(_options.Stretch(_options.WitnessWindow + _options.Duration))))
            : capped;
    }

    /// <summary>Depositions not yet settled, for tests and status.</summary>
    public int Pending => _depositions.Count;

    /// <summary>
    /// This activation has written the state with <paramref name="generation"/>: no other
    /// activation reads the database as its own from now on. <paramref name="alone"/>: nothing was
    /// stored before (the first map), so no earlier activation has a lease to outlast.
    /// </summary>
    public void Fenced(long generation, bool alone = false)
    {
        if (_fencedAt == long.MinValue)
        {
            _fencedAt = _clock.GetTimestamp();
            _alone = alone;
        }
        Witnesses.Fenced(generation, alone);
    }

    /// <summary>
    /// A new map is visible. Every group whose primary changed records its old primary's lease,
    /// unless that host has already adopted the new map (it then rejects the old epoch) or its
    /// lease has run out.
    /// </summary>
    public void MapChanged(ClusterMap previous, ClusterMap next)
    {
        if (_fencedAt == long.MinValue)
        {
            Fenced(Witnesses.Generation, alone: true);
        }
        var now = _clock.GetTimestamp();
        var unknownUntil = UnknownLeasesUntil();
        if (now < unknownUntil)
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
                var deposition = new Deposition(volume.VolumeId, group.Index, group.Primary, next.Epoch, _grantedUntil.GetValueOrDefault(group.Primary));
                if (deposition.Until(unknownUntil) > now && _adoptedEpoch.GetValueOrDefault(group.Primary) < next.Epoch)
                {
                    _depositions.Add(deposition);
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
        var unknownUntil = UnknownLeasesUntil();
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
            return d.Until(unknownUntil) <= now;
        });
        if (request.MapEpoch != map.Epoch)
        {
            return new LeaseGrant(map.Epoch, false, TimeSpan.Zero, [], TimeSpan.Zero, Grantor: GrantorId, Generation: Witnesses.Generation, Stamp: now);
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
            waits[key] = Math.Max(waits.GetValueOrDefault(key), deposition.Until(unknownUntil) - now);
        }
        var unknownFor = Math.Max(0, unknownUntil - now);
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
            GrantorId,
            Witnesses.Generation,
            now);
    }

    /// <summary>
    /// Whether no earlier activation can grant a lease any more: a majority of the map's hosts
    /// took this one's grants (they witness no older one again), or the longest an earlier one may
    /// grant on its witnesses has passed. Until then the map's hosts must not change (majorities
    /// meet only within one set), nor may a snapshot rely on older leases running out in time.
    /// </summary>
    public bool OlderActivationsSettled => Witnesses.IsEstablished || _clock.GetTimestamp() >= UnknownLeasesUntil();

    /// <summary>
    /// Grants nothing, and says why: the host still echoes the answer's stamp, which lets it
    /// witness this activation on its next request.
    /// </summary>
    public LeaseGrant Refuse(ClusterMap map, string reason) =>
        new(map.Epoch, false, TimeSpan.Zero, [], TimeSpan.Zero, Grantor: GrantorId, Generation: Witnesses.Generation, Stamp: _clock.GetTimestamp(), Refusal: reason);

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
        var until = Math.Max(_grantedUntil.GetValueOrDefault(hostId), UnknownLeasesUntil());
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
