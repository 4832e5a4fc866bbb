using System.Buffers;
using System.Collections.Immutable;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Placement;

namespace OrleansStorage.Maps;

/// <summary>
/// Every change of allocation as a pure function from one map to the next. A change yields a map
/// with epoch + 1; a request that changes nothing yields the same map (same epoch); bad input
/// throws <see cref="InvalidRequestException"/> and yields nothing.
/// </summary>
public sealed class ClusterMapTransitions(ManagementOptions options)
{
    public const int BlockSize = 4096;
    public const int MaxNameLength = 64;

    /// <summary>Each snapshot is searched by reads of older ones and kept in the map: a bound keeps both small.</summary>
    public const int MaxSnapshotsPerVolume = 256;

    private static readonly SearchValues<char> NameChars =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.");

    public ClusterMap RegisterHost(ClusterMap map, HostRegistration registration, DateTimeOffset now)
    {
        ValidateHostId(registration.HostId);
        if (registration.CapacityBytes <= 0)
        {
            throw new InvalidRequestException($"host '{registration.HostId}' reported capacity {registration.CapacityBytes}; it must be > 0");
        }
        return HostLifecycle.Register(map, registration, now);
    }

    public ClusterMap CreateVolume(ClusterMap map, Guid volumeId, string name, long sizeBytes, int replicationFactor)
    {
        ValidateVolumeName(name);
        ValidateSize(name, sizeBytes);
        if (map.FindVolume(name) is not null)
        {
            throw new InvalidRequestException($"a volume named '{name}' already exists");
        }
        var upHosts = map.Hosts.Count(h => h.State == HostState.Up);
        var roomy = map.PlacementHostIds().Count();
        if (replicationFactor < 1 || replicationFactor > 3)
        {
            throw new InvalidRequestException($"replication factor {replicationFactor} is out of range: it must be 1, 2 or 3");
        }
        if (replicationFactor > upHosts)
        {
            throw new InvalidRequestException($"replication factor {replicationFactor} needs {replicationFactor} Up hosts; the cluster has {upHosts}");
        }
        if (replicationFactor > roomy)
        {
            var full = string.Join(", ", map.Hosts.Where(h => h.State == HostState.Up && h.NearFull).Select(h => h.HostId));
            throw new InvalidRequestException($"replication factor {replicationFactor} needs {replicationFactor} Up hosts with room; {roomy} have room ({full} near full)");
        }
        var segmentCount = (sizeBytes + options.SegmentSizeBytes - 1) / options.SegmentSizeBytes;
        var pgCount = (int)Math.Min(options.PlacementGroupsPerVolume, segmentCount);
        var groups = PlacementPlanner.PlaceVolume(map, pgCount, replicationFactor);
        var volume = new VolumeInfo(volumeId, name, sizeBytes, replicationFactor, options.SegmentSizeBytes, VolumeState.Active, groups);
        return map with { Epoch = map.Epoch + 1, Volumes = map.Volumes.Add(volume) };
    }

    public ClusterMap ResizeVolume(ClusterMap map, string name, long newSizeBytes)
    {
        var volume = map.FindVolume(name) ?? throw new VolumeNotFoundException(name);
        ValidateSize(name, newSizeBytes);
        if (newSizeBytes < volume.SizeBytes)
        {
            throw new InvalidRequestException($"volume '{name}' is {volume.SizeBytes} bytes; shrinking to {newSizeBytes} is not supported (grow only)");
        }
        if (newSizeBytes == volume.SizeBytes)
        {
            return map;
        }
        return map with { Epoch = map.Epoch + 1, Volumes = map.Volumes.Replace(volume, volume with { SizeBytes = newSizeBytes }) };
    }

    /// <summary>Replaces a volume's QoS limits (unlimited: none kept in the map).</summary>
    public ClusterMap SetVolumeQos(ClusterMap map, string name, VolumeQos qos)
    {
        var volume = map.FindVolume(name) ?? throw new VolumeNotFoundException(name);
        var limits = qos.Checked().IsUnlimited ? null : qos;
        if (volume.Qos == limits)
        {
            return map;
        }
        return map with { Epoch = map.Epoch + 1, Volumes = map.Volumes.Replace(volume, volume with { Qos = limits }) };
    }

    /// <summary>
    /// A snapshot of the volume at the next epoch: every write admitted before that epoch is in it,
    /// none admitted at or after it (docs/snapshots.md).
    /// </summary>
    public static ClusterMap CreateSnapshot(ClusterMap map, string volumeName, string snapshotName, Guid snapshotId, DateTimeOffset now)
    {
        ValidateSnapshotName(snapshotName);
        var volume = map.FindVolume(volumeName) ?? throw new VolumeNotFoundException(volumeName);
        if (volume.FindSnapshot(snapshotName) is not null)
        {
            throw new InvalidRequestException($"volume '{volumeName}' already has a snapshot named '{snapshotName}'");
        }
        var snapshots = volume.Snapshots;
        if (snapshots.Length >= MaxSnapshotsPerVolume)
        {
            throw new InvalidRequestException($"volume '{volumeName}' has {snapshots.Length} snapshots, the most a volume may have; delete one first");
        }
        var epoch = map.Epoch + 1;
        var snapshot = new SnapshotInfo(snapshotId, snapshotName, epoch, now, volume.SizeBytes);
        return map with { Epoch = epoch, Volumes = map.Volumes.Replace(volume, volume with { Snapshots = snapshots.Add(snapshot) }) };
    }

    /// <summary>The snapshot leaves the map; each host then merges its copies into the snapshot before it or drops them.</summary>
    public static ClusterMap DeleteSnapshot(ClusterMap map, string volumeName, string snapshotName)
    {
        var volume = map.FindVolume(volumeName) ?? throw new VolumeNotFoundException(volumeName);
        var snapshot = volume.FindSnapshot(snapshotName) ?? throw new InvalidRequestException($"volume '{volumeName}' has no snapshot named '{snapshotName}'");
        if (map.ClonesOf(volume.VolumeId, snapshot.SnapshotId).Select(c => c.Name).Order(StringComparer.Ordinal).ToList() is { Count: > 0 } clones)
        {
            throw new InvalidRequestException($"snapshot '{volumeName}@{snapshotName}' has clones that read through to it: {string.Join(", ", clones)}; flatten or delete them first");
        }
        return map with { Epoch = map.Epoch + 1, Volumes = map.Volumes.Replace(volume, volume with { Snapshots = volume.Snapshots.Remove(snapshot) }) };
    }

    /// <summary>A writable volume of the snapshot's size whose segments read through to the snapshot until first written.</summary>
    public ClusterMap CloneVolume(ClusterMap map, string sourceVolume, string snapshotName, Guid volumeId, string name, int replicationFactor)
    {
        var source = map.FindVolume(sourceVolume) ?? throw new VolumeNotFoundException(sourceVolume);
        var snapshot = source.FindSnapshot(snapshotName) ?? throw new InvalidRequestException($"volume '{sourceVolume}' has no snapshot named '{snapshotName}'");
        var next = CreateVolume(map, volumeId, name, snapshot.SizeBytes, replicationFactor);
        var created = next.FindVolume(volumeId)!;
        // The parent's segment size, so that a clone's segment reads through to exactly one of the parent's.
        if (created.SegmentSizeBytes != source.SegmentSizeBytes)
        {
            throw new InvalidRequestException($"volume '{sourceVolume}' has {source.SegmentSizeBytes}-byte segments, new volumes {created.SegmentSizeBytes}: a clone must match its parent");
        }
        return next with { Volumes = next.Volumes.Replace(created, created with { Parent = new CloneParent(source.VolumeId, snapshot.SnapshotId) }) };
    }

    /// <summary>The clone stops reading through to its parent: every segment is its own by now.</summary>
    public static ClusterMap FlattenVolume(ClusterMap map, string name)
    {
        var volume = map.FindVolume(name) ?? throw new VolumeNotFoundException(name);
        if (volume.Parent is null)
        {
            return map;
        }
        return map with { Epoch = map.Epoch + 1, Volumes = map.Volumes.Replace(volume, volume with { Parent = null }) };
    }

    /// <summary>
    /// The volume leaves the map and a tombstone takes its place: every host in the map must
    /// confirm it removed the volume's files before the tombstone goes (docs/epoch-protocol.md).
    /// </summary>
    /// <param name="withSnapshots">Whether the volume's snapshots go with it; without, a volume that has any is refused (as <c>rbd rm</c> refuses one).</param>
    public ClusterMap DeleteVolume(ClusterMap map, string name, bool withSnapshots = false)
    {
        var volume = map.FindVolume(name) ?? throw new VolumeNotFoundException(name);
        if (map.ClonesOf(volume.VolumeId, Guid.Empty).Select(c => c.Name).Order(StringComparer.Ordinal).ToList() is { Count: > 0 } clones)
        {
            throw new InvalidRequestException($"volume '{name}' has clones that read through to its snapshots: {string.Join(", ", clones)}; flatten or delete them first");
        }
        if (!withSnapshots && !volume.Snapshots.IsDefaultOrEmpty)
        {
            var names = volume.Snapshots.Select(s => s.Name).ToList();
            throw new InvalidRequestException(
                $"volume '{name}' has {names.Count} snapshot{(names.Count == 1 ? "" : "s")} ({string.Join(", ", names.Take(10))}{(names.Count > 10 ? ", ..." : "")}): delete them first, or delete the volume with its snapshots (--with-snapshots)");
        }
        var epoch = map.Epoch + 1;
        var tombstone = new VolumeTombstone(volume.VolumeId, volume.Name, epoch, [.. map.Hosts.Select(h => h.HostId)]);
        return map with { Epoch = epoch, Volumes = map.Volumes.Remove(volume), Tombstones = map.Tombstones.Add(tombstone) };
    }

    /// <summary>
    /// Hosts confirmed removing the files of tombstoned volumes: they leave the tombstones' pending
    /// lists, and a tombstone nobody is pending on any more is pruned. Confirmations of unknown
    /// tombstones or hosts change nothing.
    /// </summary>
    public static ClusterMap ConfirmPurges(ClusterMap map, IEnumerable<(string HostId, Guid VolumeId)> confirmations)
    {
        var confirmed = confirmations.ToLookup(c => c.VolumeId, c => c.HostId);
        var changed = false;
        var tombstones = ImmutableArray.CreateBuilder<VolumeTombstone>(map.Tombstones.Length);
        foreach (var tombstone in map.Tombstones)
        {
            var pending = tombstone.PendingHosts.RemoveAll(h => confirmed[tombstone.VolumeId].Contains(h, StringComparer.Ordinal));
            changed |= pending.Length != tombstone.PendingHosts.Length;
            if (!pending.IsEmpty)
            {
                tombstones.Add(tombstone with { PendingHosts = pending });
            }
        }
        return changed ? map with { Epoch = map.Epoch + 1, Tombstones = tombstones.ToImmutable() } : map;
    }

    /// <summary>
    /// Stamps <see cref="PlacementGroup.PrimarySinceEpoch"/> on a map about to be committed after
    /// <paramref name="previous"/>. A group led by the primary it had there keeps its stamp; a group
    /// whose primary changed (failover, reorder, return from unavailable), a new group, or one whose
    /// stamp is unknown gets the new epoch. Run once per commit rather than inside each transition,
    /// so no transition, present or future, can forget it.
    /// </summary>
    public static ClusterMap StampPrimaryChanges(ClusterMap previous, ClusterMap next)
    {
        var volumes = ImmutableArray.CreateBuilder<VolumeInfo>(next.Volumes.Length);
        var any = false;
        foreach (var volume in next.Volumes)
        {
            var before = previous.FindVolume(volume.VolumeId);
            var groups = volume.PlacementGroups.ToBuilder();
            var same = true;
            for (var i = 0; i < groups.Count; i++)
            {
                var group = groups[i];
                var earlier = before is not null && group.Index < before.PlacementGroups.Length ? before.PlacementGroups[group.Index] : null;
                var since = earlier is not null && earlier.Primary == group.Primary && earlier.PrimarySinceEpoch > 0
                    ? earlier.PrimarySinceEpoch
                    : next.Epoch;
                if (group.PrimarySinceEpoch != since)
                {
                    groups[i] = group with { PrimarySinceEpoch = since };
                    same = false;
                }
            }
            any |= !same;
            volumes.Add(same ? volume : volume with { PlacementGroups = groups.ToImmutable() });
        }
        return any ? next with { Volumes = volumes.MoveToImmutable() } : next;
    }

    public static void ValidateVolumeName(string? name) => ValidateName("volume", name);

    /// <summary>Snapshot names follow the volume names' rule, so <c>VOL@SNAP</c> is never ambiguous.</summary>
    public static void ValidateSnapshotName(string? name) => ValidateName("snapshot", name);

    private static void ValidateName(string kind, string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            throw new InvalidRequestException($"a {kind} name must not be empty");
        }
        if (name.Length > MaxNameLength)
        {
            throw new InvalidRequestException($"{kind} name '{name}' is {name.Length} characters; the limit is {MaxNameLength}");
        }
        if (name.AsSpan().ContainsAnyExcept(NameChars) || name[0] == '.' || name[0] == '-' || name.Contains("..", StringComparison.Ordinal))
        {
            throw new InvalidRequestException($"{kind} name '{name}' is not allowed: use letters, digits, '-', '_' and '.', not starting with '.' or '-', and no '..'");
        }
    }

    public static void ValidateHostId(string? hostId)
    {
        if (string.IsNullOrEmpty(hostId) || hostId.Length > MaxNameLength || hostId.AsSpan().ContainsAnyExcept(NameChars) || hostId[0] == '.')
        {
            throw new InvalidRequestException($"host id '{hostId}' is not allowed: 1-{MaxNameLength} letters, digits, '-', '_' or '.'");
        }
    }

    private void ValidateSize(string name, long sizeBytes)
    {
        if (sizeBytes <= 0)
        {
            throw new InvalidRequestException($"volume size {sizeBytes} for '{name}' must be > 0");
        }
        if (sizeBytes % BlockSize != 0)
        {
            throw new InvalidRequestException($"volume size {sizeBytes} for '{name}' must be a multiple of {BlockSize} bytes");
        }
        if (sizeBytes > options.MaxVolumeSizeBytes)
        {
            throw new InvalidRequestException($"volume size {sizeBytes} for '{name}' exceeds the limit of {options.MaxVolumeSizeBytes} bytes");
        }
    }
}
