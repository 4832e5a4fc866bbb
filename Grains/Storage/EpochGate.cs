using OrleansStorage.Errors;
using OrleansStorage.Maps;

namespace OrleansStorage.Storage;

public enum EpochVerdict
{
    /// <summary>Same epoch: serve it if this host has the role the request needs.</summary>
    Current,

    /// <summary>The request is older: reject with the server's epoch and report the mismatch.</summary>
    RequestStale,

    /// <summary>The request is newer: this server is behind; report, pull the map, decide again.</summary>
    ServerBehind,
}

public enum ReplicaRole
{
    /// <summary>Client reads and writes go to the PG's primary.</summary>
    Primary,

    /// <summary>Writes forwarded by the primary go to every acting and every pending replica.</summary>
    Member,

    /// <summary>Segment copies go to a replica being filled.</summary>
    Pending,
}

/// <summary>The epoch protocol of docs/epoch-protocol.md, in one place.</summary>
public static class EpochGate
{
    public static EpochVerdict Judge(long requestEpoch, long serverEpoch) =>
        requestEpoch == serverEpoch ? EpochVerdict.Current
        : requestEpoch < serverEpoch ? EpochVerdict.RequestStale
        : EpochVerdict.ServerBehind;

    /// <summary>
    /// At equal epochs: the volume must exist, the segment must lie inside it, and this host must
    /// hold <paramref name="role"/> in the segment's placement group, else the request is misdirected.
    /// </summary>
    public static (VolumeInfo Volume, PlacementGroup Group) Admit(ClusterMap map, string hostId, SegmentAddress segment, ReplicaRole role)
    {
        var volume = map.FindVolume(segment.VolumeId) ?? throw new VolumeNotFoundException(segment.VolumeId, map.Epoch);
        if (segment.SegmentIndex < 0 || segment.SegmentIndex >= volume.SegmentCount)
        {
            throw new InvalidRequestException(
                $"segment {segment.SegmentIndex} is outside volume '{volume.Name}', which has {volume.SegmentCount} segments");
        }
        var group = volume.PlacementGroupOf(segment.SegmentIndex);
        switch (role)
        {
            case ReplicaRole.Primary when !group.IsAvailable:
                throw new PlacementGroupUnavailableException(volume.Name, group.Index, map.Epoch, group.Absent);
            case ReplicaRole.Primary when group.Primary != hostId:
                throw new MisdirectedRequestException(hostId, volume.VolumeId, group.Index, map.Epoch, $"is not the primary (the primary is '{group.Primary}')");
            case ReplicaRole.Member when !group.Receives(hostId):
                throw new MisdirectedRequestException(hostId, volume.VolumeId, group.Index, map.Epoch, "holds no replica");
            case ReplicaRole.Pending when group.FindPending(hostId) is null:
                throw new MisdirectedRequestException(hostId, volume.VolumeId, group.Index, map.Epoch, "is not being filled");
        }
        return (volume, group);
    }

    /// <summary>A byte range must lie inside its segment and inside the volume's size.</summary>
    public static void CheckRange(VolumeInfo volume, long segmentIndex, int offset, int length)
    {
        var segmentStart = segmentIndex * volume.SegmentSizeBytes;
        if (offset < 0 || length < 0 || (long)offset + length > volume.SegmentSizeBytes
            || segmentStart + offset + length > volume.SizeBytes)
        {
            throw new InvalidRequestException(
                $"range [{segmentStart + offset}, {segmentStart + offset + (long)length}) is outside volume '{volume.Name}' of {volume.SizeBytes} bytes");
        }
    }
}
