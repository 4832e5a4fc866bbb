using Microsoft.Extensions.Options;
using Orleans.Configuration;
using OrleansStorage.Hosting;

namespace OrleansStorage.Identity;

/// <summary>
/// The first thing a silo does, before it joins membership or touches a segment: open and lock its
/// data directory, read the superblock, read the cluster identity from the database, and refuse
/// to start — one line, nothing changed — whenever they do not belong together. The rules are in
/// docs/epoch-protocol.md, "Identity". The host program runs it before starting the silo, so
/// that a refusal is all a person sees; every silo runs it again (a no-op then) as its first
/// lifecycle stage.
/// </summary>
public sealed class DataDirectoryCheck(
    HostDisk disk,
    IClusterIdentityStore identities,
    IOptions<ClusterOptions> cluster,
    IOptions<StorageServerOptions> storage) : ILifecycleParticipant<ISiloLifecycle>
{
    private readonly Lock _gate = new();
    private Task? _check;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(DataDirectoryCheck), ServiceLifecycleStage.First, EnsureAsync, _ =>
        {
            disk.Dispose(); // a silo of this process started later may take the directory again
            return Task.CompletedTask;
        });

    /// <summary>Runs the check once; throws <see cref="HostStartupException"/> with the line to show when the silo must not start.</summary>
    public Task EnsureAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return _check ??= CheckAsync(cancellationToken);
        }
    }

    private async Task CheckAsync(CancellationToken cancellationToken)
    {
        await Task.Yield();
        disk.Open();
        try
        {
            await DecideAsync(cancellationToken);
        }
        catch
        {
            disk.Dispose();
            throw;
        }
    }

    private async Task DecideAsync(CancellationToken cancellationToken)
    {
        var identity = await identities.ReadAsync(cancellationToken);
        var superblock = disk.Superblock;
        var deployment = cluster.Value.ClusterId;
        if (identity is not null)
        {
            if (!string.Equals(identity.DeploymentId, deployment, StringComparison.Ordinal))
            {
                throw new HostStartupException(
                    $"the database holds cluster {identity.ClusterId}, run by Orleans cluster id '{identity.DeploymentId}', but this silo is configured with Cluster:ClusterId '{deployment}'; two deployments never share one database: use '{identity.DeploymentId}' or another database");
            }
            if (superblock is not null && superblock.ClusterId != identity.ClusterId)
            {
                throw new HostStartupException(
                    $"data directory '{disk.Root}' belongs to cluster {superblock.ClusterId} (host '{superblock.HostId}'), but the database holds cluster {identity.ClusterId}; point --postgres at the database of cluster {superblock.ClusterId}, or give this silo an empty --data");
            }
            // A new host, or a directory from before superblocks whose database is this one: it joins.
            disk.Claim(identity.ClusterId);
            return;
        }
        if (superblock is not null)
        {
            if (storage.Value.RecoverMap)
            {
                return; // the map is rebuilt from this disk and the others by 'ostor cluster recover-map'
            }
            throw new HostStartupException(
                $"the database holds no cluster map, but data directory '{disk.Root}' holds data of cluster {superblock.ClusterId} as host '{superblock.HostId}': the database was lost, or --postgres names another one. Nothing was changed. To rebuild the map from the hosts' disks, start every host with --recover and run 'ostor cluster recover-map' (infra/cluster recover-map does both)");
        }
        if (disk.HoldsSegments && !await identities.HoldsMapWithoutIdentityAsync(cancellationToken))
        {
            throw new HostStartupException(
                $"data directory '{disk.Root}' holds segment files but no superblock, and the database holds no cluster map, so nothing tells which cluster they belong to. Nothing was changed; move them away to start this host empty");
        }
        // A fresh directory: it is claimed when the host adopts its cluster's first map.
    }
}
