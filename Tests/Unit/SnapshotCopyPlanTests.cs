using OrleansStorage.Segments;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Unit;

public sealed class SnapshotCopyPlanTests
{
    private const long Unknown = SegmentVersions.Unknown;
    private const long None = SnapshotCopyVersions.NoCopy;
    private const long V = 4L << 32;

    [Theory]
    [InlineData(V, V, true, SnapshotCopyAction.Nothing)]
    [InlineData(V, V, false, SnapshotCopyAction.Send)] // a new replica gets every copy
    [InlineData(V, V + 1, true, SnapshotCopyAction.Send)]
    [InlineData(V, Unknown, true, SnapshotCopyAction.Send)]
    [InlineData(V, None, true, SnapshotCopyAction.Send)]
    [InlineData(None, V, true, SnapshotCopyAction.Remove)]
    [InlineData(None, None, false, SnapshotCopyAction.Nothing)]
    public void A_known_copy_of_the_primary_goes_where_the_target_differs(long ours, long theirs, bool resync, SnapshotCopyAction expected) =>
        Assert.Equal(expected, SnapshotCopyPlan.Decide(ours, theirs, resync));

    [Theory]
    [InlineData(V, true, SnapshotCopyAction.TakeTheirs)]
    [InlineData(V, false, SnapshotCopyAction.TakeTheirs)]
    [InlineData(Unknown, true, SnapshotCopyAction.Nothing)]
    [InlineData(None, true, SnapshotCopyAction.Send)]
    public void A_copy_of_unknown_version_never_replaces_the_targets(long theirs, bool resync, SnapshotCopyAction expected) =>
        Assert.Equal(expected, SnapshotCopyPlan.Decide(Unknown, theirs, resync));
}
