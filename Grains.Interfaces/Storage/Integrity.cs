using System.Collections.Immutable;

namespace OrleansStorage.Storage;

/// <summary>What a segment holds on one host, block by block: the checksum of each 4 KiB block's data, and the blocks that fail their stored checksum.</summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentCheck")]
public sealed record SegmentCheck([property: Id(0)] uint[] Checksums, [property: Id(1)] int[] BadBlocks);

/// <summary>Whole 4 KiB blocks of a segment, from <see cref="FirstBlock"/> on, that a replica must take as its copy (a scrub found its own bad or different).</summary>
[GenerateSerializer, Immutable, Alias("ostor.BlockRepair")]
public sealed record BlockRepair(
    [property: Id(0)] long Epoch,
    [property: Id(1)] SegmentAddress Segment,
    [property: Id(2)] int FirstBlock,
    [property: Id(3)] ReadOnlyMemory<byte> Bytes);

/// <summary>
/// What a scrub of one segment found across its replicas: each problem as one line for a person
/// ("host-2: blocks 3-5 fail their checksum"), how many blocks were rewritten from a good copy,
/// and how many have no good copy anywhere (lost: reads of them fail with an I/O error).
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.SegmentScrub")]
public sealed record SegmentScrub(
    [property: Id(0)] SegmentAddress Segment,
    [property: Id(1)] int Replicas,
    [property: Id(2)] long BytesChecked,
    [property: Id(3)] ImmutableArray<string> Problems,
    [property: Id(4)] int BlocksRepaired,
    [property: Id(5)] int BlocksLost);

/// <summary>
/// The last complete background scrub pass of one host over the segments of a volume it leads:
/// when the pass (over every volume the host leads) started and ended, how many segments and bytes
/// (on all replicas) of this volume it checked, how many block copies it rewrote from good ones,
/// and how many blocks had no good copy anywhere.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.VolumeScrubRecord")]
public sealed record VolumeScrubRecord(
    [property: Id(0)] Guid VolumeId,
    [property: Id(1)] DateTimeOffset Finished,
    [property: Id(2)] long Segments,
    [property: Id(3)] long BlocksRepaired,
    [property: Id(4)] long BlocksLost,
    [property: Id(5)] DateTimeOffset Started,
    [property: Id(6)] long BytesChecked);
