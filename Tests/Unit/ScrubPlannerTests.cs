using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class ScrubPlannerTests
{
    private static SegmentCheck Check(uint[] checksums, params int[] bad) => new(checksums, bad);

    [Fact]
    public void A_copy_failing_its_checksum_is_rewritten_from_a_good_one_and_never_used_as_a_source()
    {
        var plan = ScrubPlanner.Plan("p", [("p", Check([1, 2, 3], 1)), ("s", Check([1, 9, 3]))]);
        var repair = Assert.Single(plan.Repairs);
        Assert.Equal((1, "s"), (repair.Block, repair.Source));
        Assert.Equal(["p"], repair.Targets);
        Assert.Empty(plan.LostBlocks);
    }

    [Fact]
    public void Good_copies_that_differ_follow_the_majority_even_against_the_primary()
    {
        var plan = ScrubPlanner.Plan("p", [("p", Check([5])), ("a", Check([6])), ("b", Check([6]))]);
        var repair = Assert.Single(plan.Repairs);
        Assert.Equal(0, repair.Block);
        Assert.Equal("a", repair.Source);
        Assert.Equal(["p"], repair.Targets);
        Assert.Contains(ScrubPlanner.Describe(plan.Findings), line => line == "p: block 0 differs from the majority of good copies");
    }

    [Fact]
    public void A_tie_between_good_copies_goes_to_the_primary()
    {
        var plan = ScrubPlanner.Plan("p", [("s", Check([6])), ("p", Check([5]))]);
        var repair = Assert.Single(plan.Repairs);
        Assert.Equal("p", repair.Source);
        Assert.Equal(["s"], repair.Targets);
    }

    [Fact]
    public void A_block_bad_everywhere_is_lost_and_nothing_is_written_over_it()
    {
        var plan = ScrubPlanner.Plan("p", [("p", Check([1, 2], 1)), ("s", Check([1, 2], 1))]);
        Assert.Empty(plan.Repairs);
        Assert.Equal([1], plan.LostBlocks);
    }

    [Fact]
    public void A_shorter_copy_holds_zeros_past_its_end()
    {
        // Stored value 0 is a block of zeros: a host whose file ends earlier agrees with zeros.
        var plan = ScrubPlanner.Plan("p", [("p", Check([7, 0, 0])), ("s", Check([7]))]);
        Assert.Empty(plan.Repairs);
    }

    [Fact]
    public void Consecutive_blocks_with_one_source_and_target_travel_together()
    {
        var plan = ScrubPlanner.Plan("p", [("p", Check([1, 2, 3, 4, 5])), ("s", Check([1, 0, 0, 4, 0]))]);
        var runs = ScrubPlanner.Runs(plan.Repairs).Select(r => (r.FirstBlock, r.Blocks)).ToList();
        Assert.Equal([(1, 2), (4, 1)], runs);
        Assert.Contains("s: blocks 1-2 differ from the majority of good copies", ScrubPlanner.Describe(plan.Findings));
    }
}
