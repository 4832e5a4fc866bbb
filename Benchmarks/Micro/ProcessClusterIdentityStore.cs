using OrleansStorage.Identity;

namespace OrleansStorage.Benchmarks.Micro;

/// <summary>
/// The cluster identity of a benchmark's one-silo cluster, kept for the life of the process, next
/// to the memory grain storage the benchmark keeps its map in: what is measured is a grain call,
/// not PostgreSQL.
/// </summary>
internal sealed class ProcessClusterIdentityStore : IClusterIdentityStore
{
    private readonly Lock _gate = new();
    private ClusterIdentity? _identity;

    public Task<ClusterIdentity?> ReadAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return Task.FromResult(_identity);
        }
    }

    public Task<ClusterIdentity> CreateAsync(ClusterIdentity proposed, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return Task.FromResult(_identity ??= proposed);
        }
    }

    public Task<bool> HoldsMapWithoutIdentityAsync(CancellationToken cancellationToken = default) => Task.FromResult(false);
}
