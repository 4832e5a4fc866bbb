using OrleansStorage.Segments;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class MissedForwardsTests
{
    private static readonly SegmentAddress Segment = new(Guid.NewGuid(), 3);
    private const long Version = (7L << SegmentVersions.EpochShift) + 5;

    [Fact]
    public void A_replica_that_missed_nothing_gets_the_version()
    {
        var missed = new MissedForwards();
        Assert.Equal(Version, missed.VersionFor(Segment, "host-2", new ByteRange(0, 4096), Version));
    }

    [Fact]
    public void A_forward_that_does_not_rewrite_what_the_replica_missed_makes_its_version_unknown_once()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", new ByteRange(0, 65536));

        Assert.Equal(Version, missed.VersionFor(Segment, "host-3", new ByteRange(131072, 4096), Version));
        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-2", new ByteRange(131072, 4096), Version));
        missed.Delivered(Segment, "host-2", new ByteRange(131072, 4096), SegmentVersions.Unknown);
        // The replica's version is unknown now, for good: the next forward carries the version again.
        Assert.Equal(Version, missed.VersionFor(Segment, "host-2", new ByteRange(131072, 4096), Version));
    }

    [Fact]
    public void A_retry_that_rewrites_every_missed_byte_carries_the_version()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", new ByteRange(4096, 8192));
        missed.Add(Segment, "host-2", new ByteRange(16384, 4096));

        Assert.Equal(Version, missed.VersionFor(Segment, "host-2", new ByteRange(0, 65536), Version));
        missed.Delivered(Segment, "host-2", new ByteRange(0, 65536), Version);
        Assert.Equal(0, missed.Count);
    }

    [Fact]
    public void A_missed_preserve_is_made_up_for_by_no_write()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", range: null);

        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-2", new ByteRange(0, 1 << 20), Version));
    }

    [Fact]
    public void A_fill_that_installed_or_confirmed_the_segment_settles_the_miss()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", new ByteRange(0, 4096));
        missed.Forget(Segment, "host-2");

        Assert.Equal(Version, missed.VersionFor(Segment, "host-2", new ByteRange(8192, 4096), Version));
    }

    [Fact]
    public void A_primary_that_loses_the_group_keeps_the_misses_as_its_own_and_spreads_them_when_it_leads_again()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", new ByteRange(0, 4096));
        missed.Move(Segment, "host-2", ["host-1"]);

        Assert.False(missed.Has(Segment, "host-2"));
        // host-1 holds the bytes host-2 lacks: host-2's forward of another range must not raise it.
        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-1", new ByteRange(8192, 4096), Version));

        missed.Delivered(Segment, "host-1", new ByteRange(8192, 4096), SegmentVersions.Unknown);
        missed.Add(Segment, "host-1", new ByteRange(0, 4096));
        missed.Move(Segment, "host-1", ["host-2", "host-3"]);
        Assert.Equal(Version, missed.VersionFor(Segment, "host-2", new ByteRange(0, 4096), Version));
        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-3", new ByteRange(8192, 4096), Version));
    }

    [Fact]
    public void A_forward_carrying_unknown_that_fails_keeps_the_first_miss()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", new ByteRange(0, 65536));             // W1 refused
        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-2", new ByteRange(131072, 65536), Version)); // W2 sent with -1
        missed.Add(Segment, "host-2", new ByteRange(131072, 65536));        // ... and refused too: ForwardAsync's catch
        // The retry of W2 does not rewrite W1's bytes: it must not carry the version.
        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-2", new ByteRange(131072, 65536), Version + 2));
    }

    [Fact]
    public void A_forward_that_rewrote_some_missed_ranges_settles_only_those()
    {
        var missed = new MissedForwards();
        missed.Add(Segment, "host-2", new ByteRange(0, 4096));
        missed.Delivered(Segment, "host-2", new ByteRange(0, 4096), Version); // a covering forward landed...
        Assert.Equal(0, missed.Count);
        missed.Add(Segment, "host-2", new ByteRange(0, 4096));
        missed.Add(Segment, "host-2", new ByteRange(8192, 4096)); // ... and a miss that came while it was on its way
        missed.Delivered(Segment, "host-2", new ByteRange(0, 4096), Version);
        Assert.Equal(SegmentVersions.Unknown, missed.VersionFor(Segment, "host-2", new ByteRange(0, 4096), Version));
    }
}
