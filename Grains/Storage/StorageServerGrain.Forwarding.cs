using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Segments;

namespace OrleansStorage.Storage;

/// <summary>
/// A primary's forwards to the other replicas of a group, and what it remembers of the ones that
/// failed (docs/failures.md, "Write versions"): two replicas that report the same version must
/// hold the same bytes, so a replica that missed a write is never raised to our version until it
/// has the write again or a copy replaced its segment.
/// </summary>
public sealed partial class StorageServerGrain
{
    private readonly MissedForwards _missedForwards = new();

    /// <summary>
    /// Applies the local write and the forwards to every other acting and pending replica in
    /// parallel; done when all are. If any failed, the write is not acknowledged and the segment
    /// gets a fresh version here, so a replica that missed it differs from us; and the miss is
    /// remembered, because the next write's version would raise the replica back to ours: a later
    /// forward to it that does not rewrite what it missed makes its version unknown instead (and
    /// it is reported). A replica that failed for any reason but a map disagreement is reported at
    /// once, so it is resynced before it serves again; one that refused for its map (the map moved
    /// on while the forward was on its way) is not, as the client's retry of the same write, at
    /// the new epoch, usually makes it whole: only a later forward that finds it still lacking the
    /// write reports it. <paramref name="range"/> is what the request rewrites (null: a preserve).
    /// </summary>
    private async Task ForwardAsync(PlacementGroup group, SegmentAddress segment, ByteRange? range, long version, Task local, Func<string, long, Task> forward)
    {
        // Built without LINQ: this runs for every write.
        var all = new Task[group.Replicas.Length + group.Pending.Length];
        bool[]? madeUnknown = null; // rare: only after a miss
        all[0] = local;
        var next = 1;
        for (var i = 1; i < group.Replicas.Length; i++)
        {
            all[next] = Forward(group.Replicas[i], next);
            next++;
        }
        foreach (var pending in group.Pending)
        {
            all[next] = Forward(pending.HostId, next);
            next++;
        }
        try
        {
            await Task.WhenAll(all);
        }
        catch
        {
            var targets = group.ForwardTargets.ToArray(); // the order the forwards were started in
            for (var i = 0; i < targets.Length; i++)
            {
                if (!all[i + 1].IsCompletedSuccessfully)
                {
                    // Failed or cancelled (a timeout): it may or may not have landed there.
                    // Before the fresh version below: every forward sent from now on is judged by it.
                    _missedForwards.Add(segment, targets[i], range);
                }
            }
            ReportMadeUnknown(group, segment, targets, all, madeUnknown);
            var epoch = _map.Epoch;
            await store.NextVersionAsync(segment, epoch);
            for (var i = 0; i < targets.Length; i++)
            {
                if (all[i + 1].Exception?.InnerException is { } failure && !IsMapDisagreement(failure))
                {
                    ReportReplica(group, segment, targets[i], failure.Message);
                }
            }
            throw;
        }
        if (madeUnknown is not null)
        {
            ReportMadeUnknown(group, segment, [.. group.ForwardTargets], all, madeUnknown);
        }

        Task Forward(string hostId, int index)
        {
            try
            {
                if (!_missedForwards.Has(segment, hostId))
                {
                    return forward(hostId, version);
                }
                var carried = _missedForwards.VersionFor(segment, hostId, range, version);
                if (carried == SegmentVersions.Unknown && version != SegmentVersions.Unknown)
                {
                    (madeUnknown ??= new bool[all.Length])[index] = true;
                }
                return ForwardJudgedAsync(hostId, carried);
            }
            catch (Exception ex)
            {
                return Task.FromException(ex); // failed like a forward that was sent: reported below
            }
        }

        // The record is settled only once the replica applied the forward: one refused again
        // leaves it whole (the catch above adds this write's range to it).
        async Task ForwardJudgedAsync(string hostId, long carried)
        {
            await forward(hostId, carried);
            _missedForwards.Delivered(segment, hostId, range, carried);
        }
    }

    /// <summary>Replicas whose version a forward made unknown (it lacks a write it missed) must be resynced before they serve again.</summary>
    private void ReportMadeUnknown(PlacementGroup group, SegmentAddress segment, string[] targets, Task[] all, bool[]? madeUnknown)
    {
        if (madeUnknown is null)
        {
            return;
        }
        for (var i = 0; i < targets.Length; i++)
        {
            if (madeUnknown[i + 1] && all[i + 1].IsCompletedSuccessfully)
            {
                ReportReplica(group, segment, targets[i], $"it lacks a write to segment {segment.SegmentIndex} that it refused or missed earlier; its version is unknown now");
            }
        }
    }

    private void ReportReplica(PlacementGroup group, SegmentAddress segment, string hostId, string reason)
    {
        var report = new ReplicaFailure(segment.VolumeId, group.Index, hostId, _hostId, reason, _map.Epoch);
        InBackground(Management.ReportReplicaFailedAsync(report), ex => Log.ReplicaFailureReportFailed(logger, ex, report.HostId));
    }

    private static bool IsMapDisagreement(Exception failure) =>
        failure is StaleEpochException or MisdirectedRequestException or VolumeNotFoundException or InvalidRequestException;

    /// <summary>
    /// On a new map, what this host remembers of missed forwards. In a group it still leads, the
    /// records of replicas still in it stay. In a group it no longer leads, this host holds the
    /// writes that failed elsewhere and the new primary may lack them: the records pass to this
    /// host itself, so that a forward from the new primary that does not rewrite those bytes makes
    /// its version unknown (<see cref="RecordReplicaVersion"/>) instead of raising it over them; a
    /// replica that missed them, other than the new primary, is reported. Leading a group again
    /// with such a record, every other replica lacks those bytes.
    /// </summary>
    private void SettleMissedForwards(ClusterMap map)
    {
        if (_missedForwards.Count == 0)
        {
            return;
        }
        foreach (var (segment, hostId) in _missedForwards.Records())
        {
            var volume = map.FindVolume(segment.VolumeId);
            var group = volume is not null && segment.SegmentIndex < volume.SegmentCount ? volume.PlacementGroupOf(segment.SegmentIndex) : null;
            if (group is null || !group.Receives(_hostId))
            {
                _missedForwards.Forget(segment, hostId); // the data goes with the group
            }
            else if (group.Primary == _hostId)
            {
                if (hostId == _hostId)
                {
                    _missedForwards.Move(segment, _hostId, group.ForwardTargets);
                }
                else if (!group.Receives(hostId))
                {
                    _missedForwards.Forget(segment, hostId);
                }
            }
            else if (hostId != _hostId)
            {
                if (hostId != group.Primary && group.Receives(hostId))
                {
                    ReportReplica(group, segment, hostId, $"it missed a write to segment {segment.SegmentIndex} from a primary that no longer leads the group");
                }
                _missedForwards.Move(segment, hostId, [_hostId]);
            }
        }
    }
}
