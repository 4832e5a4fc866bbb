namespace OrleansStorage.Segments;

/// <summary>
/// Blocks of a segment on this host do not match their checksums: the disk returned other bytes
/// than were written (or the checksum file was lost). Nothing was returned or written; the storage
/// server repairs the blocks from another replica, or fails the request with an I/O error.
/// </summary>
public sealed class CorruptBlocksException(Storage.SegmentAddress segment, IReadOnlyList<int> blocks)
    : Exception($"segment {segment.SegmentIndex} of volume {segment.VolumeId}: {blocks.Count} block(s) fail their checksum, first at byte {(long)blocks[0] * BlockChecksums.BlockSize}")
{
    public Storage.SegmentAddress Segment { get; } = segment;

    /// <summary>The 4 KiB blocks of the segment whose data does not match its checksum.</summary>
    public IReadOnlyList<int> Blocks { get; } = blocks;
}
