namespace OrleansStorage.Storage;

/// <summary>
/// Fill a pending replica of one placement group from this primary: every segment with data
/// (new replica) or every segment whose write version differs (<see cref="Resync"/>).
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.CopyJob")]
public sealed record CopyJob(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] int GroupIndex,
    [property: Id(2)] string TargetHostId,
    [property: Id(3)] bool Resync);

/// <summary>A whole segment as sent to a pending replica: its data extents, their bytes back to back, and its write version.</summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentImage")]
public sealed record SegmentImage(
    [property: Id(0)] long Epoch,
    [property: Id(1)] SegmentAddress Segment,
    [property: Id(2)] long Version,
    [property: Id(3)] DataExtent[] Extents,
    [property: Id(4)] ReadOnlyMemory<byte> Bytes);

/// <summary>Where a copy to a pending replica stands.</summary>
/// <param name="SegmentsCopied">Segments actually sent; a resync skips those whose versions already match.</param>
[GenerateSerializer, Immutable, Alias("ostor.CopyProgress")]
public sealed record CopyProgress(
    [property: Id(0)] CopyJob Job,
    [property: Id(1)] string SourceHostId,
    [property: Id(2)] long StartEpoch,
    [property: Id(3)] long SegmentsTotal,
    [property: Id(4)] long SegmentsDone,
    [property: Id(5)] long SegmentsCopied,
    [property: Id(6)] long BytesCopied,
    [property: Id(7)] DateTimeOffset Started,
    [property: Id(8)] DateTimeOffset? Finished,
    [property: Id(9)] string? Failure)
{
    public double BytesPerSecond(DateTimeOffset now)
    {
        var seconds = ((Finished ?? now) - Started).TotalSeconds;
        return seconds > 0 ? BytesCopied / seconds : 0;
    }
}

/// <summary>A primary finished filling a pending replica: management may move it into the acting set.</summary>
[GenerateSerializer, Immutable, Alias("ostor.CopyCompletion")]
public sealed record CopyCompletion(
    [property: Id(0)] CopyJob Job,
    [property: Id(1)] string SourceHostId,
    [property: Id(2)] long StartEpoch);

/// <summary>A primary could not apply a write, sent at <see cref="Epoch"/>, on another replica of a group; that replica must be resynced before it serves.</summary>
[GenerateSerializer, Immutable, Alias("ostor.ReplicaFailure")]
public sealed record ReplicaFailure(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] int GroupIndex,
    [property: Id(2)] string HostId,
    [property: Id(3)] string ReportingHostId,
    [property: Id(4)] string Reason,
    [property: Id(5)] long Epoch);

/// <summary>
/// A snapshot's copy of one segment as a primary sends it to a replica being filled; with
/// <see cref="Remove"/>, the primary holds no copy and the replica must drop its own.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.SnapshotCopyImage")]
public sealed record SnapshotCopyImage(
    [property: Id(0)] long Epoch,
    [property: Id(1)] Guid VolumeId,
    [property: Id(2)] Guid SnapshotId,
    [property: Id(3)] long SegmentIndex,
    [property: Id(4)] long Version,
    [property: Id(5)] DataExtent[] Extents,
    [property: Id(6)] ReadOnlyMemory<byte> Bytes,
    [property: Id(7)] bool Remove = false);

/// <summary>The versions of one snapshot's copies of a group's segments on a host, in segment order; <see cref="NoCopy"/> where it holds none.</summary>
[GenerateSerializer, Immutable, Alias("ostor.SnapshotCopyVersions")]
public sealed record SnapshotCopyVersions(
    [property: Id(0)] Guid SnapshotId,
    [property: Id(1)] long[] Versions)
{
    public const long NoCopy = long.MinValue;
}
