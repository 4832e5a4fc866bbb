using System.Collections.Immutable;

namespace OrleansStorage.Storage;

/// <summary>Names one segment of one volume; every data request carries it with the sender's epoch.</summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentAddress")]
public readonly record struct SegmentAddress(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] long SegmentIndex);

[GenerateSerializer, Immutable, Alias("ostor.SegmentRead")]
public sealed record SegmentRead(
    [property: Id(0)] long Epoch,
    [property: Id(1)] SegmentAddress Segment,
    [property: Id(2)] int Offset,
    [property: Id(3)] int Length);

/// <summary>A write of <see cref="Data"/> at <see cref="Offset"/> inside one segment.</summary>
/// <param name="Version">Set by the primary when it forwards the write: the segment's new write version. Clients leave it 0.</param>
[GenerateSerializer, Immutable, Alias("ostor.SegmentWrite")]
public sealed record SegmentWrite(
    [property: Id(0)] long Epoch,
    [property: Id(1)] SegmentAddress Segment,
    [property: Id(2)] int Offset,
    [property: Id(3)] ReadOnlyMemory<byte> Data,
    [property: Id(4)] bool ForceUnitAccess,
    [property: Id(5)] long Version = 0);

/// <summary>Discards <see cref="Length"/> bytes at <see cref="Offset"/> of one segment; they read as zeros after.</summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentTrim")]
public sealed record SegmentTrim(
    [property: Id(0)] long Epoch,
    [property: Id(1)] SegmentAddress Segment,
    [property: Id(2)] int Offset,
    [property: Id(3)] int Length,
    [property: Id(4)] long Version = 0);

/// <summary>
/// What a storage server reports about itself: use, copies in progress and recently finished,
/// its last background scrub of each volume it leads, and how many bad blocks it repaired (or
/// found with no good copy) since it started.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.StorageServerStatus")]
public sealed record StorageServerStatus(
    [property: Id(0)] string HostId,
    [property: Id(1)] long Epoch,
    [property: Id(2)] long BytesUsed,
    [property: Id(3)] int SegmentFiles,
    [property: Id(4)] string SiloAddress,
    [property: Id(5)] ImmutableArray<CopyProgress> Copies,
    [property: Id(6)] ImmutableArray<CopyProgress> FinishedCopies,
    [property: Id(7)] ImmutableArray<VolumeScrubRecord> Scrubs,
    [property: Id(8)] long BlocksRepaired,
    [property: Id(9)] long BlocksLost,
    [property: Id(10)] long AccessRefused = 0,
    [property: Id(11)] long QosDelayed = 0,
    ImmutableArray<VolumeIoTotals> VolumeIo = default)
{
    /// <summary>Reads and writes this host served per volume since it started (the dashboard's rates); never a default array.</summary>
    [Id(12)]
    public ImmutableArray<VolumeIoTotals> VolumeIo { get; init; } = VolumeIo.IsDefault ? [] : VolumeIo;
}

/// <summary>Client reads and writes (trims included) one host served as a primary for one volume or snapshot.</summary>
[GenerateSerializer, Immutable, Alias("ostor.VolumeIoTotals")]
public sealed record VolumeIoTotals(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] long ReadOperations,
    [property: Id(2)] long ReadBytes,
    [property: Id(3)] long WriteOperations,
    [property: Id(4)] long WriteBytes);

/// <summary>A byte range inside one segment that holds written data (everything else reads as zeros).</summary>
[GenerateSerializer, Immutable, Alias("ostor.DataExtent")]
public readonly record struct DataExtent(
    [property: Id(0)] int Offset,
    [property: Id(1)] int Length);

/// <summary>
/// Bytes read from a segment. A record rather than a bare <see cref="ReadOnlyMemory{T}"/> return
/// value: as a generated field the payload is serialized as one block of bytes, while a bare
/// ReadOnlyMemory&lt;byte&gt; result goes through Orleans' generic element-by-element codec (measured
/// ~6x slower for 1 MiB reads end to end).
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentData")]
public sealed record SegmentData([property: Id(0)] ReadOnlyMemory<byte> Bytes);

/// <summary>
/// A primary made its copy of a segment for the snapshot current at <see cref="Epoch"/>, from the
/// segment at <see cref="Version"/>: a replica makes its own from the same version, or is resynced.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentPreserve")]
public sealed record SegmentPreserve(
    [property: Id(0)] long Epoch,
    [property: Id(1)] SegmentAddress Segment,
    [property: Id(2)] long Version);
