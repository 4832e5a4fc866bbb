using OrleansStorage.Storage;

namespace OrleansStorage.Segments;

/// <summary>
/// Segments that come back suspect: after an unclean shutdown, those whose write intent was set
/// (their versions become unknown until a copy or the primary's repair version replaces them), and
/// those the storage server kept suspect because it could not have them resynced before it stopped.
/// </summary>
public sealed partial class SegmentStore
{
    // Segments the storage server could not have resynced before it stopped (what its replicas
    // missed lives only in its memory): their intents stay set and no clean-shutdown marker is
    // written while there are any, so the next start finds them suspect. Under _gate.
    private readonly HashSet<SegmentAddress> _keptSuspect = [];

    /// <summary>
    /// Segments whose write version cannot be trusted because the store was not shut down cleanly
    /// while they had writes that were not yet durable (the write-intent bitmap marks them). Their
    /// versions are already <see cref="SegmentVersions.Unknown"/> here; the storage server has them
    /// repaired from the primary, or, as the primary, gives them a fresh version and has its
    /// replicas repaired.
    /// </summary>
    public IReadOnlyDictionary<Guid, long[]> SuspectSegments { get; private set; }

    /// <summary>The suspect segments have been repaired (or handed to repair): they are suspect no more.</summary>
    public void SuspectSegmentsRepaired(IReadOnlyDictionary<Guid, long[]> repaired)
    {
        lock (_gate)
        {
            if (ReferenceEquals(SuspectSegments, repaired))
            {
                SuspectSegments = new Dictionary<Guid, long[]>();
                _keptSuspect.RemoveWhere(segment => repaired.TryGetValue(segment.VolumeId, out var indexes) && indexes.Contains(segment.SegmentIndex));
            }
        }
    }

    /// <summary>
    /// The segment must be compared with its replicas before it is trusted again, and the storage
    /// server cannot ask for that now (it is stopping): it is suspect for the next activation in
    /// this process, and its intent stays set and the shutdown is not clean, so it is suspect
    /// after a restart too.
    /// </summary>
    public async Task KeepSuspectAsync(SegmentAddress segment)
    {
        Task intent;
        lock (_gate)
        {
            _keptSuspect.Add(segment);
            intent = MarkDirty(segment);
            var suspects = SuspectSegments.ToDictionary(kv => kv.Key, kv => kv.Value);
            suspects[segment.VolumeId] = [.. (suspects.GetValueOrDefault(segment.VolumeId) ?? []).Append(segment.SegmentIndex).Distinct()];
            SuspectSegments = suspects;
        }
        await intent.ConfigureAwait(false);
    }

    private IReadOnlyDictionary<Guid, long[]> OpenAfterShutdown()
    {
        var marker = Path.Combine(_volumesRoot, CleanShutdownFileName);
        if (File.Exists(marker))
        {
            // Gone, durably, before anything is written: a crash from now on must look unclean.
            File.Delete(marker);
            SyncDirectory(_volumesRoot);
            return new Dictionary<Guid, long[]>();
        }
        var suspects = new Dictionary<Guid, long[]>();
        foreach (var volumeId in ListVolumes())
        {
            var marked = _intents.Marked(volumeId);
            if (marked.Count == 0)
            {
                continue;
            }
            foreach (var index in marked)
            {
                _versions.Set(volumeId, index, SegmentVersions.Unknown);
                // Data and checksums reach the disk apart: the data that survived is what the
                // primary serves (or what the resync replaces), so its checksums follow it.
                RebuildChecksums(new SegmentAddress(volumeId, index));
            }
            SyncVersions(volumeId);
            suspects[volumeId] = [.. marked];
        }
        return suspects;
    }
}
