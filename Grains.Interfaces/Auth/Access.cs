namespace OrleansStorage.Auth;

/// <summary>What a caller must hold to have a grain method run (see <see cref="RequiresAttribute"/>).</summary>
public enum Access
{
    /// <summary>Anyone past the TLS handshake, with or without a ticket: asking for a ticket.</summary>
    Anyone,

    /// <summary>Any valid ticket: the map, the status, mismatch reports.</summary>
    Authenticated,

    /// <summary>Read on the volume the request names.</summary>
    Read,

    /// <summary>Write on the volume the request names (read included).</summary>
    Write,

    /// <summary>Create, resize, delete and verify the volume the request names.</summary>
    Admin,

    /// <summary>The cluster itself: hosts, rebalancing, map recovery, client grants (admin on every name).</summary>
    ClusterAdmin,

    /// <summary>Another host of the cluster: replica traffic, registration, leases, recovery.</summary>
    Host,
}

/// <summary>
/// The access a grain interface method needs; a method without it needs <see cref="Access.Host"/>,
/// so a method added later is closed to clients until someone decides otherwise.
/// </summary>
/// <param name="access">What the caller must hold.</param>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class RequiresAttribute(Access access) : Attribute
{
    public Access Access { get; } = access;

    /// <summary>
    /// The argument holding the volume's name, for volume access checked before the call; -1 when
    /// the request names the volume by id, which the storage server checks against its map.
    /// </summary>
    public int VolumeNameArgument { get; init; } = -1;

    /// <summary>The argument naming a volume whose data the call copies (a clone's source): read access is needed on it too; -1: none.</summary>
    public int SourceVolumeArgument { get; init; } = -1;
}
