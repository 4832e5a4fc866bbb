using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;

namespace OrleansStorage.Identity;

/// <summary>
/// Rebuilds a lost cluster map from what the hosts keep on disk (docs/epoch-protocol.md,
/// "Recovering the map"). Every host saves each map it adopts, whole, before acting on it, so the
/// newest map any host saved is the newest state of every volume that any host holds data for;
/// where hosts differ, that newest map wins, and the report says which host's map it was and what
/// the others knew.
/// </summary>
public static class MapRecovery
{
    /// <summary>
    /// How far the recovered epoch jumps past every epoch a host has seen. The lost database may
    /// have persisted maps that no host adopted; a client can hold one of those. The gap keeps the
    /// recovered map's epoch above them, so no two maps with one epoch and different content meet.
    /// </summary>
    public const long EpochGap = 1000;

    public static MapRecoveryReport Rebuild(IReadOnlyList<HostDiskReport> reports)
    {
        if (reports.Count == 0)
        {
            throw new InvalidRequestException("no live host reported its disk; start the hosts with --recover first");
        }
        var clusters = reports.Where(r => r.ClusterId != Guid.Empty).GroupBy(r => r.ClusterId).ToList();
        if (clusters.Count == 0)
        {
            throw new InvalidRequestException($"none of the live hosts ({string.Join(", ", reports.Select(r => r.HostId))}) holds data of any cluster; there is no map to recover");
        }
        if (clusters.Count > 1)
        {
            var listed = string.Join("; ", clusters.Select(c => $"{c.Key} ({string.Join(", ", c.Select(r => r.HostId))})"));
            throw new ForeignClusterException($"the live hosts belong to different clusters: {listed}; stop the hosts of the cluster not being recovered and try again");
        }
        var clusterId = clusters[0].Key;
        var lines = new List<string>();
        foreach (var report in reports.OrderBy(r => r.HostId, StringComparer.Ordinal))
        {
            lines.Add(report switch
            {
                { ClusterId: var id } when id == Guid.Empty => $"{report.HostId}: fresh data directory, no cluster; not part of the recovered map",
                { LastMap: null } => $"{report.HostId}: cluster {clusterId}, no map saved",
                _ => $"{report.HostId}: cluster {clusterId}, map of epoch {report.LastMap.Epoch} ({report.LastMap.Volumes.Length} volumes, {report.LastMap.Tombstones.Length} tombstones), newest write from epoch {report.HighestVersionEpoch}",
            });
        }
        var saved = reports.Where(r => r.LastMap is { } map && map.ClusterId == clusterId).ToList();
        if (saved.Count == 0)
        {
            throw new InvalidRequestException($"no live host of cluster {clusterId} saved a map; there is nothing to rebuild it from");
        }
        var newest = saved.MaxBy(r => r.LastMap!.Epoch)!;
        var chosen = newest.LastMap!;
        DescribeVolumes(chosen, newest.HostId, saved, reports, lines);
        var seen = Math.Max(saved.Max(r => r.LastMap!.Epoch), reports.Max(r => r.HighestVersionEpoch));
        var recovered = chosen with { Epoch = seen + EpochGap };
        lines.Add($"recovered: cluster {clusterId} at epoch {recovered.Epoch} (the map of epoch {chosen.Epoch} from {newest.HostId}; newest epoch seen on any disk {seen}, plus {EpochGap})");
        return new MapRecoveryReport(recovered, [.. lines]);
    }

    private static void DescribeVolumes(ClusterMap chosen, string chosenHost, List<HostDiskReport> saved, IReadOnlyList<HostDiskReport> reports, List<string> lines)
    {
        foreach (var volume in chosen.Volumes)
        {
            lines.Add($"volume '{volume.Name}' ({volume.SizeBytes} bytes, factor {volume.ReplicationFactor}, {volume.PlacementGroups.Length} placement groups): as of epoch {chosen.Epoch} ({chosenHost})");
            foreach (var other in saved.Where(r => r.LastMap!.Epoch < chosen.Epoch))
            {
                if (other.LastMap!.FindVolume(volume.VolumeId) is { } older && !SameDescriptor(older, volume))
                {
                    lines.Add($"  {other.HostId} knew it as of epoch {other.LastMap.Epoch} ({older.SizeBytes} bytes, other placement): the newer descriptor wins");
                }
            }
        }
        foreach (var tombstone in chosen.Tombstones)
        {
            lines.Add($"volume '{tombstone.Name}' stays deleted (deleted at epoch {tombstone.DeletedAtEpoch}; files removed as hosts adopt the map)");
        }
        var named = chosen.Volumes.Select(v => v.VolumeId).Concat(chosen.Tombstones.Select(t => t.VolumeId)).ToHashSet();
        foreach (var other in saved)
        {
            foreach (var gone in other.LastMap!.Volumes.Where(v => !named.Contains(v.VolumeId)))
            {
                lines.Add($"volume '{gone.Name}' is in {other.HostId}'s map of epoch {other.LastMap.Epoch} but not in the newest: it was deleted since; not recovered");
                named.Add(gone.VolumeId);
            }
        }
        foreach (var report in reports)
        {
            foreach (var volumeId in report.VolumesOnDisk.Where(id => !named.Contains(id)))
            {
                lines.Add($"{report.HostId} holds files of volume {volumeId} that no map names; they are kept, not served");
            }
        }
    }

    private static bool SameDescriptor(VolumeInfo a, VolumeInfo b) =>
        a.SizeBytes == b.SizeBytes
        && a.ReplicationFactor == b.ReplicationFactor
        && a.PlacementGroups.Select(pg => pg.Describe()).SequenceEqual(b.PlacementGroups.Select(pg => pg.Describe()));
}
