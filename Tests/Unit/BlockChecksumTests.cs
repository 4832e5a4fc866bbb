using OrleansStorage.Segments;
using OrleansStorage.Storage;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Unit;

/// <summary>The segment store's block checksums: what a flipped bit, a lost checksum file or an old store does to reads and writes.</summary>
public sealed class BlockChecksumTests(ITestOutputHelper output) : IDisposable
{
    private const int Segment = 1 << 20;
    private const int Block = BlockChecksums.BlockSize;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-crc-test-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly SegmentAddress _segment = new(Guid.NewGuid(), 2);
    private SegmentStore? _store;

    private SegmentStore Store => _store ??= new SegmentStore(_root);

    public void Dispose()
    {
        _store?.Dispose();
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>Flips bits in the segment's file behind the store's back, as a bad disk would.</summary>
    private void FlipOnDisk(long offset, byte mask)
    {
        using var file = new FileStream(Store.SegmentPath(_segment), FileMode.Open, FileAccess.ReadWrite);
        file.Position = offset;
        var b = (byte)file.ReadByte();
        file.Position = offset;
        file.WriteByte((byte)(b ^ mask));
    }

    [Fact]
    public void Four_blocks_at_a_time_give_the_same_checksums_as_one_at_a_time()
    {
        var bytes = Pattern((9 * Block) + 100, 9);
        var together = new uint[11];
        BlockChecksums.Compute(bytes, together);
        for (var i = 0; i < together.Length; i++)
        {
            var start = i * Block;
            var alone = start >= bytes.Length ? 0 : BlockChecksums.Stored(bytes.AsSpan(start, Math.Min(Block, bytes.Length - start)));
            Assert.Equal(alone, together[i]);
        }
        Assert.Equal(0u, BlockChecksums.Stored(new byte[Block])); // a zero block stores 0
    }

    [Fact]
    public async Task A_flipped_bit_fails_the_read_of_its_block_only()
    {
        var data = Pattern(4 * Block, 1);
        await Store.WriteAsync(_segment, Segment, 0, data, durable: false);
        FlipOnDisk(2 * Block + 17, 0x04);

        var failure = await Assert.ThrowsAsync<CorruptBlocksException>(() => Store.ReadAsync(_segment, Segment, 100, new byte[3 * Block]).AsTask());
        Assert.Equal([2], failure.Blocks);
        var first = new byte[2 * Block];
        await Store.ReadAsync(_segment, Segment, 0, first); // blocks 0 and 1 are sound
        Assert.Equal(data[..(2 * Block)], first);
        var check = await Store.CheckAsync(_segment, Segment);
        Assert.Equal([2], check.BadBlocks);
    }

    [Fact]
    public async Task A_lost_or_truncated_checksum_file_is_unknown_never_all_good()
    {
        await Store.WriteAsync(_segment, Segment, 0, Pattern(3 * Block, 2), durable: true);
        var checksums = Store.ChecksumPath(_segment);
        Store.Dispose();
        _store = null;
        File.WriteAllBytes(checksums, new byte[4]); // truncated to one slot (and that one wrong)
        await Assert.ThrowsAsync<CorruptBlocksException>(() => Store.ReadAsync(_segment, Segment, 2 * Block, new byte[Block]).AsTask());

        Store.Dispose();
        _store = null;
        File.Delete(checksums);
        var check = await Store.CheckAsync(_segment, Segment);
        Assert.Equal([0, 1, 2], check.BadBlocks);
        // A never-written block of the same segment holds zeros, which is what a lost checksum says.
        var hole = new byte[Block];
        await Store.ReadAsync(_segment, Segment, 10 * Block, hole);
        Assert.All(hole, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task A_partial_write_over_a_corrupt_block_writes_nothing_unless_told_not_to_check()
    {
        var data = Pattern(2 * Block, 3);
        await Store.WriteAsync(_segment, Segment, 0, data, durable: false);
        FlipOnDisk(Block + 1, 0xff);
        await Assert.ThrowsAsync<CorruptBlocksException>(() => Store.WriteAsync(_segment, Segment, Block + 100, new byte[] { 7 }, durable: false).AsTask());
        var check = await Store.CheckAsync(_segment, Segment);
        Assert.Equal([1], check.BadBlocks);

        // A whole-block write needs nothing of the old block: it replaces the bad one.
        await Store.WriteAsync(_segment, Segment, Block, data.AsMemory(Block, Block), durable: false);
        Assert.Empty((await Store.CheckAsync(_segment, Segment)).BadBlocks);

        FlipOnDisk(Block + 1, 0xff);
        await Store.WriteAsync(_segment, Segment, Block + 100, new byte[] { 7 }, durable: false, verifyPartialBlocks: false);
        Assert.Empty((await Store.CheckAsync(_segment, Segment)).BadBlocks); // now consistent, and to be recopied by its caller
    }

    [Fact]
    public async Task Repaired_blocks_read_back_and_check_clean()
    {
        var data = Pattern(3 * Block, 4);
        await Store.WriteAsync(_segment, Segment, 0, data, durable: false);
        FlipOnDisk(Block, 0x80);
        await Store.RepairBlocksAsync(_segment, Segment, 1, data.AsMemory(Block, Block));
        var back = new byte[3 * Block];
        await Store.ReadAsync(_segment, Segment, 0, back);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task An_installed_image_carries_checksums_for_its_extents_and_holes()
    {
        var bytes = Pattern(5000 + 300, 5);
        await Store.InstallImageAsync(_segment, Segment, [new DataExtent(1000, 5000), new DataExtent(3 * Block + 10, 300)], bytes, version: 7);
        Assert.Empty((await Store.CheckAsync(_segment, Segment)).BadBlocks);
        var back = new byte[5000];
        await Store.ReadAsync(_segment, Segment, 1000, back);
        Assert.Equal(bytes[..5000], back);
    }

    [Fact]
    public async Task A_store_from_before_checksums_gets_them_from_its_data_once()
    {
        var data = Pattern(2 * Block + 5, 6);
        await Store.WriteAsync(_segment, Segment, 0, data, durable: true);
        var checksums = Store.ChecksumPath(_segment);
        Store.Dispose();
        _store = null;
        File.Delete(checksums);
        File.Delete(Path.Combine(_root, "volumes", SegmentStore.ChecksummedMarkerFileName));

        var back = new byte[data.Length];
        await Store.ReadAsync(_segment, Segment, 0, back);
        Assert.Equal(data, back);
        Assert.True(File.Exists(Path.Combine(_root, "volumes", SegmentStore.ChecksummedMarkerFileName)));
    }

    [Fact]
    public async Task After_an_unclean_shutdown_a_suspect_segment_takes_checksums_from_its_surviving_data()
    {
        await Store.WriteAsync(_segment, Segment, 0, Pattern(Block, 7), durable: false);
        // The data reached the disk, the checksum did not: as a power cut between the two leaves it.
        File.WriteAllBytes(Store.ChecksumPath(_segment), new byte[4]);
        using var reopened = new SegmentStore(_root); // no clean shutdown: the segment is suspect
        Assert.Contains(_segment.SegmentIndex, reopened.SuspectSegments[_segment.VolumeId]);
        Assert.Empty((await reopened.CheckAsync(_segment, Segment)).BadBlocks);
    }

    [Fact]
    public async Task Random_unaligned_writes_and_trims_keep_every_checksum_true()
    {
        var seed = Random.Shared.Next();
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var model = new byte[Segment];
        for (var i = 0; i < 300; i++)
        {
            var offset = random.Next(0, Segment - 1);
            var length = random.Next(1, Math.Min(3 * Block, Segment - offset));
            if (random.Next(4) == 0)
            {
                await Store.TrimAsync(_segment, Segment, offset, length);
                Array.Clear(model, offset, length);
            }
            else
            {
                var data = Pattern(length, random.Next());
                await Store.WriteAsync(_segment, Segment, offset, data, durable: false);
                data.CopyTo(model, offset);
            }
        }
        Assert.True((await Store.CheckAsync(_segment, Segment)).BadBlocks.Length == 0, $"seed {seed}: blocks fail their checksums");
        var back = new byte[Segment];
        await Store.ReadAsync(_segment, Segment, 0, back);
        Assert.True(model.AsSpan().SequenceEqual(back), $"seed {seed}: the segment differs from what was written");
    }
}
