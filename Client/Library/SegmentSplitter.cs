namespace OrleansStorage.Client.Library;

/// <summary>One piece of a volume request that falls inside a single segment.</summary>
/// <param name="SegmentIndex">Which segment.</param>
/// <param name="OffsetInSegment">Where the piece starts inside the segment.</param>
/// <param name="Length">How many bytes.</param>
/// <param name="BufferOffset">Where the piece starts inside the caller's buffer.</param>
public readonly record struct SegmentSlice(long SegmentIndex, int OffsetInSegment, int Length, int BufferOffset);

/// <summary>Splits a byte range of a volume at segment boundaries.</summary>
public static class SegmentSplitter
{
    /// <param name="maxPiece">Pieces longer than this are cut further (the data port's limit on one request's data); a segment may then have several.</param>
    public static SegmentSlice[] Split(long volumeOffset, int length, int segmentSize, int maxPiece = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(volumeOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentSize, 1);
        if (length == 0)
        {
            return [];
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPiece, 1);
        var first = volumeOffset / segmentSize;
        var last = (volumeOffset + length - 1) / segmentSize;
        var slices = new List<SegmentSlice>((int)(last - first + 1));
        var done = 0;
        while (done < length)
        {
            var position = volumeOffset + done;
            var inSegment = (int)(position % segmentSize);
            var take = Math.Min(Math.Min(length - done, segmentSize - inSegment), maxPiece);
            slices.Add(new SegmentSlice(position / segmentSize, inSegment, take, done));
            done += take;
        }
        return [.. slices];
    }
}
