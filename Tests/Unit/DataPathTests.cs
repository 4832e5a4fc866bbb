using OrleansStorage.Client.Cli;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class SegmentSplitterTests
{
    [Fact]
    public void A_range_inside_one_segment_is_one_slice()
    {
        var slices = SegmentSplitter.Split(100, 50, 4096);
        Assert.Equal([new SegmentSlice(0, 100, 50, 0)], slices);
    }

    [Fact]
    public void A_range_across_boundaries_is_split_at_each_boundary()
    {
        var slices = SegmentSplitter.Split(4000, 10000, 4096);
        Assert.Equal(
        [
            new SegmentSlice(0, 4000, 96, 0),
            new SegmentSlice(1, 0, 4096, 96),
            new SegmentSlice(2, 0, 4096, 4192),
            new SegmentSlice(3, 0, 1712, 8288),
        ], slices);
        Assert.Equal(10000, slices.Sum(s => s.Length));
    }

    [Fact]
    public void Empty_ranges_have_no_slices_and_bad_arguments_throw()
    {
        Assert.Empty(SegmentSplitter.Split(10, 0, 4096));
        Assert.Throws<ArgumentOutOfRangeException>(() => SegmentSplitter.Split(-1, 10, 4096));
        Assert.Throws<ArgumentOutOfRangeException>(() => SegmentSplitter.Split(0, -1, 4096));
    }
}

public sealed class SegmentWriteOrderTests
{
    private readonly SegmentAddress _segment = new(Guid.NewGuid(), 0);

    [Fact]
    public async Task Overlapping_writes_wait_for_each_other()
    {
        var order = new SegmentWriteOrder();
        var first = await order.EnterAsync(_segment, 0, 100);
        var second = order.EnterAsync(_segment, 50, 100).AsTask();
        await Task.Delay(50);
        Assert.False(second.IsCompleted);
        first.Dispose();
        (await second.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, order.InFlightCount);
    }

    [Fact]
    public async Task A_waiting_whole_segment_request_is_not_overtaken_by_later_narrow_writes()
    {
        var order = new SegmentWriteOrder();
        var narrow = await order.EnterAsync(_segment, 0, 4096);
        var whole = order.EnterAsync(_segment, 0, 1 << 20).AsTask();
        var later = order.EnterAsync(_segment, 8192, 4096).AsTask(); // overlaps only the waiting whole-segment request
        await Task.Delay(50);
        Assert.False(whole.IsCompleted);
        Assert.False(later.IsCompleted);

        narrow.Dispose();
        var wholeTurn = await whole.WaitAsync(TimeSpan.FromSeconds(5));
        await Task.Delay(50);
        Assert.False(later.IsCompleted);
        wholeTurn.Dispose();
        (await later.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, order.InFlightCount);
    }

    [Fact]
    public async Task Writes_to_disjoint_blocks_and_other_segments_proceed_together()
    {
        var order = new SegmentWriteOrder();
        using var a = await order.EnterAsync(_segment, 0, 100);
        using var b = await order.EnterAsync(_segment, 4096, 100).AsTask().WaitAsync(TimeSpan.FromSeconds(1));
        using var c = await order.EnterAsync(_segment with { SegmentIndex = 1 }, 0, 100).AsTask().WaitAsync(TimeSpan.FromSeconds(1));
        Assert.Equal(3, order.InFlightCount);
    }

    [Fact]
    public async Task Writes_to_different_bytes_of_one_checksum_block_take_turns()
    {
        // Both rewrite the block's checksum from the block as they see it: they must not overlap.
        var order = new SegmentWriteOrder();
        var first = await order.EnterAsync(_segment, 0, 100);
        var second = order.EnterAsync(_segment, 200, 100).AsTask();
        await Task.Delay(50);
        Assert.False(second.IsCompleted);
        first.Dispose();
        (await second.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
    }
}

public sealed class EpochGateTests
{
    private static readonly Guid VolumeId = Guid.NewGuid();

    private static ClusterMap Map() => new(7, [], [new VolumeInfo(VolumeId, "v", 10L * 4096 + 100 * 4096, 2, 4096, VolumeState.Active,
        [new PlacementGroup(0, ["host-1", "host-2"]), new PlacementGroup(1, ["host-2", "host-3"])])]);

    [Theory]
    [InlineData(7, 7, EpochVerdict.Current)]
    [InlineData(6, 7, EpochVerdict.RequestStale)]
    [InlineData(8, 7, EpochVerdict.ServerBehind)]
    public void Epochs_are_judged_as_the_protocol_says(long request, long server, EpochVerdict verdict) =>
        Assert.Equal(verdict, EpochGate.Judge(request, server));

    [Fact]
    public void Primary_requests_go_only_to_the_primary_and_forwards_to_any_member()
    {
        var segment0 = new SegmentAddress(VolumeId, 0);
        Assert.Equal(0, EpochGate.Admit(Map(), "host-1", segment0, ReplicaRole.Primary).Group.Index);
        Assert.Throws<MisdirectedRequestException>(() => EpochGate.Admit(Map(), "host-2", segment0, ReplicaRole.Primary));
        Assert.Equal(0, EpochGate.Admit(Map(), "host-2", segment0, ReplicaRole.Member).Group.Index);
        Assert.Throws<MisdirectedRequestException>(() => EpochGate.Admit(Map(), "host-3", segment0, ReplicaRole.Member));
    }

    [Fact]
    public void Unknown_volumes_and_segments_past_the_end_are_errors()
    {
        Assert.Throws<VolumeNotFoundException>(() => EpochGate.Admit(Map(), "host-1", new SegmentAddress(Guid.NewGuid(), 0), ReplicaRole.Primary));
        Assert.Throws<InvalidRequestException>(() => EpochGate.Admit(Map(), "host-1", new SegmentAddress(VolumeId, 110), ReplicaRole.Primary));
        Assert.Throws<InvalidRequestException>(() => EpochGate.Admit(Map(), "host-1", new SegmentAddress(VolumeId, -1), ReplicaRole.Primary));
    }

    [Fact]
    public void Ranges_are_checked_against_segment_and_volume_size()
    {
        var volume = new VolumeInfo(VolumeId, "v", 3 * 4096 + 1024, 1, 4096, VolumeState.Active, [new PlacementGroup(0, ["h"])]);
        EpochGate.CheckRange(volume, 3, 0, 1024);
        Assert.Throws<InvalidRequestException>(() => EpochGate.CheckRange(volume, 3, 0, 1025));
        Assert.Throws<InvalidRequestException>(() => EpochGate.CheckRange(volume, 0, 4000, 100));
        Assert.Throws<InvalidRequestException>(() => EpochGate.CheckRange(volume, 0, -1, 1));
    }
}

public sealed class ByteSizeTests
{
    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("64KiB", 64L << 10)]
    [InlineData("256MiB", 256L << 20)]
    [InlineData("1GiB", 1L << 30)]
    [InlineData("2T", 2L << 40)]
    [InlineData("1 gib", 1L << 30)]
    [InlineData("10B", 10L)]
    public void Sizes_parse_in_binary_units(string text, long expected) => Assert.Equal(expected, ByteSize.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("1.5GiB")]
    [InlineData("abc")]
    [InlineData("99999999999TiB")]
    public void Bad_sizes_are_clear_errors(string text)
    {
        var error = Assert.Throws<InvalidRequestException>(() => ByteSize.Parse(text));
        Assert.Contains(text.Trim(), error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Sizes_format_for_people() => Assert.Equal("64.0 MiB", ByteSize.Format(64L << 20));
}
