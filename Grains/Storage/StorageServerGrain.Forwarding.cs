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
        var startEpoch = _map.Epoch;
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
            if (_map.Epoch != startEpoch)
            {
                // The grain is reentrant: the map that made a replica refuse may have been adopted
                // while we waited, its settling done before these records existed. Settle them
                // against it now, or a host that no longer leads keeps them unreported; and before
                // the client hears of the failure, so its retry through the new primary cannot
                // raise a replica that differs.
                var forgetting = new List<Task>();
                SettleMissedForwards(_map, forgetting);
                await Task.WhenAll(forgetting);
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
    /// its version unknown (<see cref="RecordReplicaVersion"/>) instead of raising it over them.
    /// The replicas that may now differ from the group's primary are reported for a resync, once
    /// (the record is moved or dropped with the report, so the next map does not report again):
    /// the replica that missed a write, or, when that replica is the new primary, every other
    /// receiver (they may hold the write it lacks). A group this host left entirely takes its
    /// copy of those bytes away: the same reports, then the records go. Leading a group again with
    /// such a record, every other replica lacks those bytes.
    /// </summary>
    private void SettleMissedForwards(ClusterMap map, List<Task>? forgetting = null)
    {
        if (_missedForwards.Count == 0)
        {
            return;
        }
        foreach (var (segment, hostId) in _missedForwards.Records())
        {
            var volume = map.FindVolume(segment.VolumeId);
            var group = volume is not null && segment.SegmentIndex < volume.SegmentCount ? volume.PlacementGroupOf(segment.SegmentIndex) : null;
            if (group is null)
            {
                _missedForwards.Forget(segment, hostId); // the volume is gone
            }
            else if (!group.Receives(_hostId))
            {
                if (hostId != _hostId)
                {
                    ReportMayDiffer(group, segment, hostId, "from a primary that left the group", forgetting);
                }
                _missedForwards.Forget(segment, hostId);
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
                ReportMayDiffer(group, segment, hostId, "from a primary that no longer leads the group", forgetting);
                _missedForwards.Move(segment, hostId, [_hostId]);
            }
        }
    }

    /// <summary>
    /// <paramref name="missedHostId"/> missed a write this host applied (and others may have):
    /// the replicas that may differ from the group's primary get an unknown version (so the new
    /// primary's next forward cannot raise them to its own, nor a fill take them as equal), then
    /// are reported for a resync. This host is left out while it still receives: its own record
    /// makes its version unknown on the next forward that does not rewrite those bytes, which
    /// reports it. <paramref name="forgetting"/>: where to leave the calls to wait for (null: in
    /// the background).
    /// </summary>
    private void ReportMayDiffer(PlacementGroup group, SegmentAddress segment, string missedHostId, string from, List<Task>? forgetting)
    {
        if (missedHostId != group.Primary)
        {
            if (group.Receives(missedHostId))
            {
                Differs(missedHostId, $"it missed a write to segment {segment.SegmentIndex} {from}");
            }
            return;
        }
        foreach (var hostId in group.ForwardTargets)
        {
            if (hostId != _hostId)
            {
                Differs(hostId, $"it may hold a write to segment {segment.SegmentIndex} that the new primary '{missedHostId}' missed {from}");
            }
        }

        void Differs(string hostId, string reason)
        {
            var forgotten = ForgetThenReportAsync(group, segment, hostId, reason);
            if (forgetting is not null)
            {
                forgetting.Add(forgotten);
            }
            else
            {
                InBackground(forgotten, ex => Log.ReplicaFailureReportFailed(logger, ex, hostId));
            }
        }
    }

    private async Task ForgetThenReportAsync(PlacementGroup group, SegmentAddress segment, string hostId, string reason)
    {
        try
        {
            await GrainFactory.GetGrain<IStorageServerGrain>(hostId).ForgetSegmentVersionAsync(segment);
        }
        catch (Exception ex)
        {
            Log.ReplicaFailureReportFailed(logger, ex, hostId); // the resync alone, then: a copy if the versions differ
        }
        ReportReplica(group, segment, hostId, reason);
    }

    public Task ForgetSegmentVersionAsync(SegmentAddress segment)
    {
        store.ForgetVersion(segment);
        return Task.CompletedTask;
    }
}
