namespace OrleansStorage.Leases;

/// <summary>
/// A storage server asks for (or renews) its primary lease. <paramref name="MapEpoch"/> is the map
/// it has adopted: it no longer admits requests of older epochs, which is what lets management
/// forget the leases it held as a primary it no longer is. The rest makes the host a witness of
/// management's activations (docs/failures.md, "Leases without the database"):
/// <paramref name="Generation"/> is the newest activation generation it has had a grant from, and
/// <paramref name="LastGrantor"/> and <paramref name="LastGrantStamp"/> echo its last grant, which
/// tells that activation the host still took its grants after the moment it stamped.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.LeaseRequest")]
public sealed record LeaseRequest(
    [property: Id(0)] string HostId,
    [property: Id(1)] long MapEpoch,
    [property: Id(2)] long Generation = 0,
    [property: Id(3)] Guid LastGrantor = default,
    [property: Id(4)] long LastGrantStamp = 0);

/// <summary>
/// Management's answer. When <see cref="Epoch"/> is past the requester's map, nothing is granted:
/// the requester catches up and asks again. Otherwise the lease lasts <see cref="Duration"/> from
/// the moment the request was sent (measured by the requester), and the requester serves a group
/// in <see cref="Waits"/> only once its wait has passed: an earlier primary of that group may still
/// hold a lease. <see cref="UnknownLeasesFor"/> is how long leases granted before management's
/// current activation may last: it applies to every group the requester newly leads, except those
/// of <see cref="VolumesCreatedSince"/>, the volumes this activation created (no lease it did not
/// grant can cover them). <see cref="Grantor"/> names the activation: only the one that gave a
/// wait knows when the deposed primary gave its lease up, so only its grants may lift that wait.
/// <see cref="Generation"/> orders activations (each takes the next when it fences the stored
/// state), and <see cref="Stamp"/> is the grantor's clock when it answered: the host echoes both,
/// from a refusal too (<see cref="Refusal"/>: why nothing was granted on the requester's own map),
/// so that a host refused for want of witnesses can witness the next time.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.LeaseGrant")]
public sealed record LeaseGrant(
    [property: Id(0)] long Epoch,
    [property: Id(1)] bool Granted,
    [property: Id(2)] TimeSpan Duration,
    [property: Id(3)] GroupWait[] Waits,
    [property: Id(4)] TimeSpan UnknownLeasesFor,
    [property: Id(5)] Guid[]? VolumesCreatedSince = null,
    [property: Id(6)] Guid Grantor = default,
    [property: Id(7)] long Generation = 0,
    [property: Id(8)] long Stamp = 0,
    [property: Id(9)] string? Refusal = null);

/// <summary>How much longer an earlier primary of a group may hold its lease, on management's clock.</summary>
[GenerateSerializer, Immutable, Alias("ostor.GroupWait")]
public readonly record struct GroupWait(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] int GroupIndex,
    [property: Id(2)] TimeSpan Remaining);
