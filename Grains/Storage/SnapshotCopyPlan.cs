using OrleansStorage.Segments;

namespace OrleansStorage.Storage;

/// <summary>What a primary filling a replica does with one snapshot's copy of one segment.</summary>
public enum SnapshotCopyAction
{
    /// <summary>The target's copy is the primary's, or both are of unknown version.</summary>
    Nothing,

    /// <summary>The primary's copy goes to the target.</summary>
    Send,

    /// <summary>The primary has no copy: the target drops its own.</summary>
    Remove,

    /// <summary>The primary's copy is of unknown version and the target's is known: the primary takes the target's.</summary>
    TakeTheirs,
}

/// <summary>
/// Decides, from the two versions of a snapshot's copy (the primary's and the target's), which way
/// the copy goes. A copy whose version is unknown (one a crash cut short while a store wrote it in
/// place, or one a replica made from a segment at a version the primary did not hold) never
/// replaces a copy the target holds: sent, it would overwrite good copies (issue 28, hole 3). It
/// still goes to a target that holds none, which is no worse off (it would otherwise refuse every
/// forwarded write for want of a copy, and be resynced again and again).
/// </summary>
public static class SnapshotCopyPlan
{
    public static SnapshotCopyAction Decide(long ours, long theirs, bool resync)
    {
        if (ours == SegmentVersions.Unknown)
        {
            return theirs switch
            {
                SnapshotCopyVersions.NoCopy => SnapshotCopyAction.Send,
                SegmentVersions.Unknown => SnapshotCopyAction.Nothing,
                _ => SnapshotCopyAction.TakeTheirs,
            };
        }
        var differs = ours != theirs;
        // A new replica gets every copy the primary has; a resync only those that differ.
        if (!differs && (resync || ours == SnapshotCopyVersions.NoCopy))
        {
            return SnapshotCopyAction.Nothing;
        }
        return ours == SnapshotCopyVersions.NoCopy ? SnapshotCopyAction.Remove : SnapshotCopyAction.Send;
    }
}
