namespace OrleansStorage.Leases;

/// <summary>
/// A storage server asks for (or renews) its primary lease. <paramref name="MapEpoch"/> is the map
/// it has adopted: it no longer admits requests of older epochs, which is what lets management
/// forget the leases it held as a primary it no longer is.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.LeaseRequest")]
public sealed record LeaseRequest(
    [property: Id(0)] string HostId,
    [property: Id(1)] long MapEpoch);

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
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.LeaseGrant")]
public sealed record LeaseGrant(
    [property: Id(0)] long Epoch,
    [property: Id(1)] bool Granted,
    [property: Id(2)] TimeSpan Duration,
    [property: Id(3)] GroupWait[] Waits,
    [property: Id(4)] TimeSpan UnknownLeasesFor,
    [property: Id(5)] Guid[]? VolumesCreatedSince = null,
    [property: Id(6)] Guid Grantor = default);

/// <summary>How much longer an earlier primary of a group may hold its lease, on management's clock.</summary>
[GenerateSerializer, Immutable, Alias("ostor.GroupWait")]
public readonly record struct GroupWait(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] int GroupIndex,
    [property: Id(2)] TimeSpan Remaining);
