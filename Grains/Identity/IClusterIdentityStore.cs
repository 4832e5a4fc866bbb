namespace OrleansStorage.Identity;

/// <summary>
/// The cluster's identity as the database records it, next to the map: read by every silo before
/// it starts and by the management service when it activates (the PostgreSQL implementation lives
/// with the silo's configuration).
/// </summary>
public interface IClusterIdentityStore
{
    /// <summary>The identity of this service's cluster, or null when the database holds none (new, or lost).</summary>
    Task<ClusterIdentity?> ReadAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Records <paramref name="proposed"/> unless an identity is already recorded; returns the one
    /// that is recorded afterwards (the first writer wins).
    /// </summary>
    Task<ClusterIdentity> CreateAsync(ClusterIdentity proposed, CancellationToken cancellationToken = default);

    /// <summary>
    /// Whether the database holds a cluster map written before cluster identities existed; such a
    /// map is adopted (given an id) rather than treated as a lost database.
    /// </summary>
    Task<bool> HoldsMapWithoutIdentityAsync(CancellationToken cancellationToken = default);
}

/// <param name="ClusterId">The cluster's id; every map and every host's superblock carries it.</param>
/// <param name="DeploymentId">
/// The Orleans ClusterId (membership deployment) that runs this cluster. A silo configured with
/// another one, pointed at the same database, is refused: two deployments never share a map.
/// </param>
public sealed record ClusterIdentity(Guid ClusterId, string DeploymentId, DateTimeOffset CreatedAt);
