using System.Collections.Immutable;

namespace OrleansStorage.Maps;

/// <summary>
/// The allocation of storage at one point in time. Its <see cref="Epoch"/> is the configuration
/// identifier: it rises by exactly one on every change and is persisted before it is published
/// (docs/epoch-protocol.md).
/// </summary>
/// <param name="ClusterId">
/// The cluster this map belongs to, created with its first map and carried by every later one.
/// Each host's data directory records it in its superblock; a party never adopts a map of another
/// cluster. <see cref="Guid.Empty"/> only in <see cref="Empty"/>, before the cluster is formed.
/// </param>
/// <param name="Tombstones">
/// Deleted volumes whose files some host may still hold. Hosts delete a volume's files only when
/// it is tombstoned here, never because it is absent; the management service prunes a tombstone
/// once every host has confirmed the purge.
/// </param>
[GenerateSerializer, Immutable, Alias("ostor.ClusterMap")]
public sealed record ClusterMap(
    [property: Id(0)] long Epoch,
    [property: Id(1)] ImmutableArray<HostInfo> Hosts,
    [property: Id(2)] ImmutableArray<VolumeInfo> Volumes,
    [property: Id(3)] Guid ClusterId = default,
    [property: Id(4)] ImmutableArray<VolumeTombstone> Tombstones = default)
{
    public static ClusterMap Empty { get; } = new(0, [], [], Guid.Empty, []);

    /// <summary>No cluster has been formed (or recovered) in this database yet.</summary>
    public bool IsUnformed => ClusterId == Guid.Empty;

    public VolumeTombstone? FindTombstone(Guid volumeId)
    {
        foreach (var tombstone in Tombstones)
        {
            if (tombstone.VolumeId == volumeId)
            {
                return tombstone;
            }
        }
        return null;
    }

    public HostInfo? FindHost(string hostId)
    {
        foreach (var host in Hosts)
        {
            if (host.HostId == hostId)
            {
                return host;
            }
        }
        return null;
    }

    public VolumeInfo? FindVolume(Guid volumeId)
    {
        foreach (var volume in Volumes)
        {
            if (volume.VolumeId == volumeId)
            {
                return volume;
            }
        }
        return null;
    }

    /// <summary>
    /// Fills fields that a map persisted by an older version lacks (they deserialize as default
    /// arrays), so code can rely on every array being present.
    /// </summary>
    public ClusterMap Normalized() => this with
    {
        Tombstones = Tombstones.IsDefault ? [] : Tombstones,
        Volumes = [.. Volumes.Select(v => v with
        {
            PlacementGroups = [.. v.PlacementGroups.Select(pg => pg.Normalized())],
            Snapshots = v.Snapshots.IsDefault ? [] : v.Snapshots,
        })],
    };

    /// <summary>The hosts that take new replicas: Up (not Draining, Down or Out).</summary>
    public IEnumerable<string> UpHostIds() => Hosts.Where(h => h.State == HostState.Up).Select(h => h.HostId);

    /// <summary>The hosts new replicas may go to: Up and not near full.</summary>
    public IEnumerable<string> PlacementHostIds() => Hosts.Where(h => h.State == HostState.Up && !h.NearFull).Select(h => h.HostId);

    /// <summary>Some group is being filled or is shedding a replica.</summary>
    public bool IsMoving() => AllGroups().Any(x => x.Group.IsMoving);

    /// <summary>Every placement group of every volume, with its volume.</summary>
    public IEnumerable<(VolumeInfo Volume, PlacementGroup Group)> AllGroups() =>
        Volumes.SelectMany(v => v.PlacementGroups.Select(pg => (v, pg)));

    public VolumeInfo? FindVolume(string name)
    {
        foreach (var volume in Volumes)
        {
            if (string.Equals(volume.Name, name, StringComparison.Ordinal))
            {
                return volume;
            }
        }
        return null;
    }

    /// <summary>The clones whose parent is this snapshot (or, with <see cref="Guid.Empty"/>, any snapshot of the volume).</summary>
    public IEnumerable<VolumeInfo> ClonesOf(Guid volumeId, Guid snapshotId) =>
        Volumes.Where(v => v.Parent is { } parent && parent.VolumeId == volumeId && (snapshotId == Guid.Empty || parent.SnapshotId == snapshotId));

    /// <summary>The snapshot with this id and the volume it belongs to; null when no volume has it.</summary>
    public (VolumeInfo Volume, SnapshotInfo Snapshot)? FindSnapshot(Guid snapshotId)
    {
        foreach (var volume in Volumes)
        {
            if (volume.FindSnapshot(snapshotId) is { } snapshot)
            {
                return (volume, snapshot);
            }
        }
        return null;
    }
}

public enum HostState
{
    /// <summary>Serving I/O; can receive new placement groups.</summary>
    Up = 0,

    /// <summary>Its silo left the cluster; its replicas are out of the acting sets.</summary>
    Down = 1,

    /// <summary>Down past the grace period; its placement groups are re-replicated elsewhere.</summary>
    Out = 2,

    /// <summary>Being evacuated: serving I/O, but every placement group moves off it and none is placed on it.</summary>
    Draining = 3,
}

/// <param name="StateSince">When the host entered <see cref="State"/> (by the management service's clock); the grace period counts from it.</param>
[GenerateSerializer, Immutable, Alias("ostor.HostInfo")]
public sealed record HostInfo(
    [property: Id(0)] string HostId,
    [property: Id(1)] HostState State,
    [property: Id(2)] long CapacityBytes,
    [property: Id(3)] string Endpoint,
    [property: Id(4)] DateTimeOffset StateSince = default,
    [property: Id(5)] bool NearFull = false,
    [property: Id(6)] string DataEndpoint = "");

/// <summary>
/// A read-only image of a volume as every write admitted before <see cref="Epoch"/> left it, and
/// no write admitted at or after it (docs/snapshots.md).
/// </summary>
/// <param name="SnapshotId">Names the snapshot's copies of segments on the hosts (never the user's name).</param>
/// <param name="Epoch">The epoch of the map change that created it.</param>
/// <param name="SizeBytes">The volume's size when it was taken (volumes only grow).</param>
[GenerateSerializer, Immutable, Alias("ostor.SnapshotInfo")]
public sealed record SnapshotInfo(
    [property: Id(0)] Guid SnapshotId,
    [property: Id(1)] string Name,
    [property: Id(2)] long Epoch,
    [property: Id(3)] DateTimeOffset Created,
    [property: Id(4)] long SizeBytes);

/// <summary>The snapshot a clone was made from: its volume and its id.</summary>
[GenerateSerializer, Immutable, Alias("ostor.CloneParent")]
public sealed record CloneParent(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] Guid SnapshotId);

/// <summary>A placement group's health, worst last.</summary>
public enum GroupHealth
{
    /// <summary>Every replica of the factor is acting and none is moving.</summary>
    Healthy = 0,

    /// <summary>At its factor, with a replica being filled or about to leave (evacuation, rebalance, resync).</summary>
    Recovering = 1,

    /// <summary>Serving with fewer acting replicas than its factor.</summary>
    Degraded = 2,

    /// <summary>No acting replica: its I/O waits.</summary>
    Unavailable = 3,
}

public enum VolumeState
{
    Active = 0,
}

/// <param name="Qos">Limits on the volume's I/O, for all its clients together; null: none.</param>
/// <param name="Snapshots">The volume's snapshots, oldest first (ascending <see cref="SnapshotInfo.Epoch"/>).</param>
/// <param name="Parent">For a clone: the snapshot it reads through to where it was never written; null once flattened, and for other volumes.</param>
[GenerateSerializer, Immutable, Alias("ostor.VolumeInfo")]
public sealed record VolumeInfo(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] string Name,
    [property: Id(2)] long SizeBytes,
    [property: Id(3)] int ReplicationFactor,
    [property: Id(4)] int SegmentSizeBytes,
    [property: Id(5)] VolumeState State,
    [property: Id(6)] ImmutableArray<PlacementGroup> PlacementGroups,
    [property: Id(7)] VolumeQos? Qos = null,
    ImmutableArray<SnapshotInfo> Snapshots = default,
    [property: Id(9)] CloneParent? Parent = null)
{
    /// <summary>Never a default array: a volume made without snapshots has an empty list.</summary>
    [Id(8)]
    public ImmutableArray<SnapshotInfo> Snapshots { get; init; } = Snapshots.IsDefault ? [] : Snapshots;

    public long SegmentCount => (SizeBytes + SegmentSizeBytes - 1) / SegmentSizeBytes;

    public SnapshotInfo? FindSnapshot(string name)
    {
        foreach (var snapshot in Snapshots)
        {
            if (string.Equals(snapshot.Name, name, StringComparison.Ordinal))
            {
                return snapshot;
            }
        }
        return null;
    }

    public SnapshotInfo? FindSnapshot(Guid snapshotId)
    {
        foreach (var snapshot in Snapshots)
        {
            if (snapshot.SnapshotId == snapshotId)
            {
                return snapshot;
            }
        }
        return null;
    }

    /// <summary>The newest snapshot taken at or before <paramref name="epoch"/>: the one a write admitted at that epoch must preserve its segment for.</summary>
    public SnapshotInfo? NewestSnapshotAt(long epoch)
    {
        SnapshotInfo? newest = null;
        foreach (var snapshot in Snapshots)
        {
            if (snapshot.Epoch <= epoch)
            {
                newest = snapshot;
            }
        }
        return newest;
    }

    /// <summary>
    /// Where a read of <paramref name="snapshot"/> looks for a segment, in order: its own copy, then
    /// the copies of every later snapshot, oldest first; a segment none of them copied is still
    /// the volume's own. (A segment is copied for a snapshot on its first write after it, so a
    /// later snapshot's copy is the segment as it was at every earlier snapshot with no copy.)
    /// </summary>
    public IEnumerable<SnapshotInfo> ReadOrder(SnapshotInfo snapshot) =>
        Snapshots.Where(s => s.Epoch >= snapshot.Epoch);

    /// <summary>Segment <c>i</c> belongs to placement group <c>i mod N</c>.</summary>
    public PlacementGroup PlacementGroupOf(long segmentIndex) =>
        PlacementGroups[(int)(segmentIndex % PlacementGroups.Length)];
}

/// <summary>
/// A placement group and who holds it.
/// </summary>
/// <param name="Replicas">
/// The acting set, in order: the first is the primary, which serves reads, orders writes and
/// forwards them to every other member and every pending replica. Empty when every replica is
/// down: the group is unavailable.
/// </param>
/// <param name="Pending">
/// Replicas being filled (a new host, or a returning one being resynced): they receive every
/// forwarded write while the primary copies segments to them, and join the acting set when the copy is done.
/// </param>
/// <param name="Absent">
/// Former acting replicas whose host is Down, oldest departure first. They hold an older copy that
/// a resync brings up to date if the host returns before it is Out.
/// </param>
/// <param name="Leaving">
/// Acting replicas that leave once a pending replica has been filled (evacuation, rebalance):
/// each completed copy removes the first of them.
/// </param>
/// <param name="PrimarySinceEpoch">
/// The epoch from which <see cref="Primary"/> has led the group in every map without a break
/// (set by management on each commit, <c>ClusterMapTransitions.StampPrimaryChanges</c>); 0 when
/// unknown (a map written before the field existed). A host that held a lease at this epoch or
/// later led the group all along, so no other primary can hold a lease for it meanwhile
/// (docs/failures.md, "Management moves").
/// </param>
[GenerateSerializer, Immutable, Alias("ostor.PlacementGroup")]
public sealed record PlacementGroup(
    [property: Id(0)] int Index,
    [property: Id(1)] ImmutableArray<string> Replicas,
    [property: Id(2)] ImmutableArray<PendingReplica> Pending,
    [property: Id(3)] ImmutableArray<string> Absent,
    [property: Id(4)] ImmutableArray<string> Leaving,
    [property: Id(5)] long PrimarySinceEpoch = 0)
{
    public PlacementGroup(int index, ImmutableArray<string> replicas)
        : this(index, replicas, [], [], [])
    {
    }

    public bool IsAvailable => !Replicas.IsEmpty;

    /// <summary>The first acting replica. Only meaningful when <see cref="IsAvailable"/>.</summary>
    public string Primary => IsAvailable ? Replicas[0] : "";

    /// <summary>In the acting set.</summary>
    public bool Contains(string hostId) => Replicas.Contains(hostId);

    /// <summary>Receives the group's writes: in the acting set or pending.</summary>
    public bool Receives(string hostId) => Replicas.Contains(hostId) || FindPending(hostId) is not null;

    /// <summary>Named anywhere in the group, so the host must keep its segment files.</summary>
    public bool References(string hostId) => Receives(hostId) || Absent.Contains(hostId);

    public PendingReplica? FindPending(string hostId)
    {
        foreach (var pending in Pending)
        {
            if (pending.HostId == hostId)
            {
                return pending;
            }
        }
        return null;
    }

    /// <summary>A replica is being filled or is about to leave.</summary>
    public bool IsMoving => !Pending.IsEmpty || !Leaving.IsEmpty;

    /// <summary>Serving, but with fewer acting replicas than the factor.</summary>
    public bool IsDegraded(int replicationFactor) => IsAvailable && Replicas.Length < replicationFactor;

    /// <summary>The worst that is true of the group: what the dashboard colours it and the metrics count it as.</summary>
    public GroupHealth HealthAt(int replicationFactor) =>
        !IsAvailable ? GroupHealth.Unavailable
        : IsDegraded(replicationFactor) ? GroupHealth.Degraded
        : IsMoving ? GroupHealth.Recovering
        : GroupHealth.Healthy;

    /// <summary>
    /// The host has been a pending replica without a break since <paramref name="epoch"/> or
    /// earlier, so it received every write from then on: a copy begun at that epoch may complete.
    /// </summary>
    public bool IsPendingSince(string hostId, long epoch) => FindPending(hostId) is { } pending && pending.SinceEpoch <= epoch;

    /// <summary>Every host that receives the group's writes: the acting replicas, then the pending ones.</summary>
    public IEnumerable<string> Receivers => Replicas.Concat(Pending.Select(p => p.HostId));

    /// <summary>Where the primary forwards a write: the other acting replicas, then every pending one.</summary>
    public IEnumerable<string> ForwardTargets => Receivers.Skip(1);

    /// <summary>
    /// Replicas the group is short of its factor, counting pending ones as already there, leaving
    /// ones as gone, and absent ones as still there: a Down host gets its grace period to return
    /// before its place is given to another.
    /// </summary>
    public int Deficit(int replicationFactor) => replicationFactor - (Replicas.Length - Leaving.Length) - Pending.Length - Absent.Length;

    /// <summary>One line for people: the acting set (primary first), then who is filling, absent or leaving.</summary>
    public string Describe()
    {
        var line = new System.Text.StringBuilder(IsAvailable ? string.Join(", ", Replicas) : "UNAVAILABLE");
        if (!Pending.IsEmpty)
        {
            line.Append("  filling: ").AppendJoin(", ", Pending.Select(p => p.HostId + (p.Resync ? " (resync)" : "")));
        }
        if (!Absent.IsEmpty)
        {
            line.Append("  absent: ").AppendJoin(", ", Absent);
        }
        if (!Leaving.IsEmpty)
        {
            line.Append("  leaving: ").AppendJoin(", ", Leaving);
        }
        return line.ToString();
    }

    internal PlacementGroup Normalized() => this with
    {
        Pending = Pending.IsDefault ? [] : Pending,
        Absent = Absent.IsDefault ? [] : Absent,
        Leaving = Leaving.IsDefault ? [] : Leaving,
    };
}

/// <summary>A deleted volume, kept in the map until every host has removed its files.</summary>
/// <param name="PendingHosts">Hosts that have not yet confirmed removing the volume's files: every host in the map when it was deleted.</param>
[GenerateSerializer, Immutable, Alias("ostor.VolumeTombstone")]
public sealed record VolumeTombstone(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] string Name,
    [property: Id(2)] long DeletedAtEpoch,
    [property: Id(3)] ImmutableArray<string> PendingHosts);

/// <summary>A replica being filled since <see cref="SinceEpoch"/>.</summary>
/// <param name="Resync">
/// The host held this group before (it returned while Down): copy only the segments whose write
/// version differs. Otherwise it starts empty and every segment with data is copied.
/// </param>
[GenerateSerializer, Immutable, Alias("ostor.PendingReplica")]
public sealed record PendingReplica(
    [property: Id(0)] string HostId,
    [property: Id(1)] long SinceEpoch,
    [property: Id(2)] bool Resync);
