using System.Collections.Immutable;
using OrleansStorage.Errors;
using OrleansStorage.Management;

namespace OrleansStorage.Maps;

/// <summary>
/// How hosts fail, return, join and leave, as pure functions from one map to the next
/// (docs/failures.md). Like <see cref="ClusterMapTransitions"/>: a change yields epoch + 1, no
/// change yields the same map, bad input throws and yields nothing.
/// </summary>
public static class HostLifecycle
{
    /// <summary>
    /// A registering host. New: Up, with no data. Down: Up again, and each group it was absent
    /// from resyncs it as a pending replica (or, when it holds the group's last copy, takes it
    /// back at once). Out: Up and empty, unless it still holds a group's last copy.
    /// </summary>
    public static ClusterMap Register(ClusterMap map, HostRegistration registration, DateTimeOffset now)
    {
        var existing = map.FindHost(registration.HostId);
        if (existing is null)
        {
            var added = new HostInfo(registration.HostId, HostState.Up, registration.CapacityBytes, registration.Endpoint, now, registration.NearFull, registration.DataEndpoint);
            return map with { Epoch = map.Epoch + 1, Hosts = map.Hosts.Add(added) };
        }
        var state = existing.State is HostState.Down or HostState.Out ? HostState.Up : existing.State;
        var updated = existing with
        {
            State = state,
            CapacityBytes = registration.CapacityBytes,
            Endpoint = registration.Endpoint,
            DataEndpoint = registration.DataEndpoint,
            StateSince = state == existing.State ? existing.StateSince : now,
            NearFull = registration.NearFull,
        };
        if (updated == existing)
        {
            return map;
        }
        var epoch = map.Epoch + 1;
        var next = map with { Epoch = epoch, Hosts = map.Hosts.Replace(existing, updated) };
        return existing.State is HostState.Down or HostState.Out
            ? MapGroups(next, pg => Rejoin(pg, registration.HostId, epoch))
            : next;
    }

    /// <summary>The host's silo left the cluster: it leaves every acting set and pending list; the survivors carry on.</summary>
    public static ClusterMap MarkDown(ClusterMap map, string hostId, DateTimeOffset now)
    {
        var host = map.FindHost(hostId) ?? throw new InvalidRequestException($"no host '{hostId}' in the map");
        if (host.State is HostState.Down or HostState.Out)
        {
            return map;
        }
        var next = map with
        {
            Epoch = map.Epoch + 1,
            Hosts = map.Hosts.Replace(host, host with { State = HostState.Down, StateSince = now }),
        };
        return MapGroups(next, pg =>
        {
            if (pg.Replicas.Contains(hostId))
            {
                return pg with
                {
                    Replicas = pg.Replicas.Remove(hostId),
                    Absent = pg.Absent.Add(hostId),
                    Leaving = pg.Leaving.Remove(hostId),
                };
            }
            var pending = pg.FindPending(hostId);
            if (pending is null)
            {
                return pg;
            }
            // A half-done resync still leaves an older copy worth resyncing again (versions are
            // per segment); a half-filled new replica holds nothing of use.
            return pg with
            {
                Pending = pg.Pending.Remove(pending),
                Absent = pending.Resync ? pg.Absent.Insert(0, hostId) : pg.Absent,
            };
        });
    }

    /// <summary>
    /// Down past the grace period: the host gives up its place in every group, which then gets a
    /// new replica elsewhere. A group whose acting set is empty keeps its most recent copy's host:
    /// forgetting it would forget the only data there is.
    /// </summary>
    public static ClusterMap MarkOut(ClusterMap map, string hostId, DateTimeOffset now)
    {
        var host = map.FindHost(hostId) ?? throw new InvalidRequestException($"no host '{hostId}' in the map");
        if (host.State != HostState.Down)
        {
            return map;
        }
        var next = map with
        {
            Epoch = map.Epoch + 1,
            Hosts = map.Hosts.Replace(host, host with { State = HostState.Out, StateSince = now }),
        };
        return MapGroups(next, pg =>
            !pg.Absent.Contains(hostId) || (!pg.IsAvailable && pg.Absent[^1] == hostId)
                ? pg
                : pg with { Absent = pg.Absent.Remove(hostId) });
    }

    /// <summary>
    /// Gives every available group short of its factor a pending replica on the least loaded Up
    /// host that it does not already name. A host absent from an available group while it is Up
    /// is resynced first: it came back while the group had no replica and was not the last to
    /// leave, so it could not take the group back, and its return left it absent. A draining host
    /// found acting and not leaving is made leaving. Groups with no acting replica have no source
    /// to copy from and wait.
    /// </summary>
    public static ClusterMap PlanRecovery(ClusterMap map)
    {
        var load = ReplicaLoad(map);
        var epoch = map.Epoch + 1;
        var changed = false;
        var back = map.Hosts.Where(h => h.State is HostState.Up or HostState.Draining).Select(h => h.HostId).ToHashSet(StringComparer.Ordinal);
        var draining = map.Hosts.Where(h => h.State == HostState.Draining).Select(h => h.HostId).ToHashSet(StringComparer.Ordinal);
        var next = MapGroups(map, (volume, pg) =>
        {
            if (!pg.IsAvailable)
            {
                return pg;
            }
            // A draining host that joined an acting set after its evacuation began (it was being
            // resynced, or came back absent) leaves it like the others, or the evacuation never ends.
            foreach (var stayed in pg.Replicas.Where(h => draining.Contains(h) && !pg.Leaving.Contains(h)).ToList())
            {
                pg = pg with { Leaving = pg.Leaving.Add(stayed) };
                changed = true;
            }
            foreach (var returned in pg.Absent.Where(back.Contains).ToList())
            {
                pg = Rejoin(pg, returned, epoch);
                changed = true;
            }
            var deficit = pg.Deficit(volume.ReplicationFactor);
            while (deficit-- > 0)
            {
                var target = LeastLoaded(load, pg);
                if (target is null)
                {
                    break;
                }
                load[target]++;
                pg = pg with { Pending = pg.Pending.Add(new PendingReplica(target, epoch, Resync: false)) };
                changed = true;
            }
            return pg;
        });
        return changed ? next with { Epoch = epoch } : map;
    }

    /// <summary>
    /// A copy to a pending replica finished. It joins the acting set (as the last member) and the
    /// first leaving replica, if any, leaves. A copy that started before the target became
    /// pending (it was away in between and missed writes) is refused: no change.
    /// </summary>
    public static ClusterMap CompleteCopy(ClusterMap map, Guid volumeId, int groupIndex, string targetHostId, long copyStartEpoch)
    {
        var volume = map.FindVolume(volumeId);
        if (volume is null || groupIndex < 0 || groupIndex >= volume.PlacementGroups.Length)
        {
            return map;
        }
        var pg = volume.PlacementGroups[groupIndex];
        if (!pg.IsPendingSince(targetHostId, copyStartEpoch) || !pg.IsAvailable)
        {
            return map;
        }
        var pending = pg.FindPending(targetHostId)!;
        var replicas = pg.Replicas.Add(targetHostId);
        var leaving = pg.Leaving;
        if (!leaving.IsEmpty)
        {
            replicas = replicas.Remove(leaving[0]);
            leaving = leaving.RemoveAt(0);
        }
        var updated = pg with { Replicas = replicas, Pending = pg.Pending.Remove(pending), Leaving = leaving, Absent = pg.Absent.Remove(targetHostId) };
        return ReplaceGroup(map with { Epoch = map.Epoch + 1 }, volume, updated);
    }

    /// <summary>
    /// A primary could not apply a write on one of the group's other replicas (a transient fault:
    /// a host that is really gone is marked Down by membership). That replica may now lack a write
    /// the others have, so it must not serve: it leaves the acting set and is resynced as a pending
    /// replica. A pending replica that missed a write sent at <paramref name="failedAtEpoch"/> or
    /// later starts its fill again (an earlier miss is covered: the primary marked the segment
    /// before the fill compared versions). The primary itself, a host not in the group, or one
    /// that is not Up, is no change.
    /// </summary>
    public static ClusterMap ResyncReplica(ClusterMap map, Guid volumeId, int groupIndex, string hostId, long failedAtEpoch)
    {
        var volume = map.FindVolume(volumeId);
        var host = map.FindHost(hostId);
        if (volume is null || groupIndex < 0 || groupIndex >= volume.PlacementGroups.Length || host?.State is not (HostState.Up or HostState.Draining))
        {
            return map;
        }
        var pg = volume.PlacementGroups[groupIndex];
        var epoch = map.Epoch + 1;
        PlacementGroup updated;
        if (pg.Replicas.Length > 1 && pg.Primary != hostId && pg.Replicas.Contains(hostId))
        {
            updated = pg.Leaving.Contains(hostId)
                ? pg with { Replicas = pg.Replicas.Remove(hostId), Leaving = pg.Leaving.Remove(hostId) } // it was leaving anyway
                : pg with { Replicas = pg.Replicas.Remove(hostId), Pending = pg.Pending.Add(new PendingReplica(hostId, epoch, Resync: true)) };
        }
        else if (pg.FindPending(hostId) is { } pending && failedAtEpoch >= pending.SinceEpoch)
        {
            updated = pg with { Pending = pg.Pending.Replace(pending, pending with { SinceEpoch = epoch }) };
        }
        else
        {
            return map;
        }
        return ReplaceGroup(map with { Epoch = epoch }, volume, updated);
    }

    /// <summary>
    /// Starts moving every group off a host: it becomes Draining (no new placement), and each
    /// group it serves gets it as leaving, so recovery fills a replacement first. A Down host is
    /// put Out at once: there is nothing to wait for.
    /// </summary>
    public static ClusterMap Evacuate(ClusterMap map, string hostId, DateTimeOffset now)
    {
        var host = map.FindHost(hostId) ?? throw new InvalidRequestException($"no host '{hostId}' in the map");
        switch (host.State)
        {
            case HostState.Down:
                return MarkOut(map, hostId, now);
            case HostState.Out:
                return map;
        }
        var others = map.Hosts.Count(h => h.HostId != hostId && h.State == HostState.Up);
        var widest = map.Volumes.Where(v => v.PlacementGroups.Any(pg => pg.References(hostId))).Select(v => v.ReplicationFactor).DefaultIfEmpty(0).Max();
        if (widest > others)
        {
            throw new InvalidRequestException($"cannot evacuate '{hostId}': a volume with factor {widest} needs {widest} other Up hosts; there are {others}");
        }
        var next = MapGroups(map, pg => pg.Replicas.Contains(hostId) && !pg.Leaving.Contains(hostId)
            ? pg with { Leaving = pg.Leaving.Add(hostId) }
            : pg);
        var changedGroups = !ReferenceEquals(next, map);
        if (host.State == HostState.Draining && !changedGroups)
        {
            return map;
        }
        return next with
        {
            Epoch = map.Epoch + 1,
            Hosts = next.Hosts.Replace(host, host with { State = HostState.Draining, StateSince = now }),
        };
    }

    /// <summary>Removes a host that no group names any more. An Up host must be evacuated first.</summary>
    public static ClusterMap Remove(ClusterMap map, string hostId)
    {
        var host = map.FindHost(hostId) ?? throw new InvalidRequestException($"no host '{hostId}' in the map");
        var holding = map.AllGroups().Count(x => x.Group.References(hostId));
        if (holding > 0)
        {
            throw new InvalidRequestException($"host '{hostId}' still holds {holding} placement groups; run 'ostor host evacuate {hostId}' and wait for it to finish");
        }
        if (host.State == HostState.Up)
        {
            throw new InvalidRequestException($"host '{hostId}' is Up; evacuate it first ('ostor host evacuate {hostId}')");
        }
        // A removed host confirms no purge any more; a tombstone only it was pending on goes too.
        var tombstones = map.Tombstones
            .Select(t => t with { PendingHosts = t.PendingHosts.Remove(hostId) })
            .Where(t => !t.PendingHosts.IsEmpty);
        return map with { Epoch = map.Epoch + 1, Hosts = map.Hosts.Remove(host), Tombstones = [.. tombstones] };
    }

    /// <summary>
    /// One rebalancing step. While groups are still moving, nothing. Otherwise, moves replicas from
    /// the most to the least loaded Up hosts until, in every volume, no host holds more than one
    /// replica above another; when replicas are even, reorders acting sets so primaries are even
    /// the same way (no copy needed: every acting replica is in sync). Replica count stands in for
    /// bytes: every group of a volume holds an equal share of it.
    /// </summary>
    public static ClusterMap PlanRebalance(ClusterMap map)
    {
        if (map.IsMoving())
        {
            return map;
        }
        var up = map.PlacementHostIds().ToList();
        if (up.Count < 2)
        {
            return map;
        }
        var moved = PlanReplicaMoves(map, up);
        return !ReferenceEquals(moved, map) ? moved : PlanPrimaryOrder(map, up);
    }

    /// <summary>
    /// Evens primaries within every volume by reordering acting sets, when nothing is moving and
    /// no host is Down: free (no data moves), so hosts that returned (they rejoin as the last
    /// replica) serve their share of reads again.
    /// </summary>
    public static ClusterMap PlanPrimaryBalance(ClusterMap map)
    {
        if (map.Hosts.Any(h => h.State == HostState.Down) || map.IsMoving() || map.AllGroups().Any(x => !x.Group.Absent.IsEmpty))
        {
            return map;
        }
        var up = map.UpHostIds().ToList();
        return up.Count < 2 ? map : PlanPrimaryOrder(map, up);
    }

    private static ClusterMap PlanReplicaMoves(ClusterMap map, List<string> up)
    {
        // Even within each volume (a volume's I/O spreads over its groups), ties going to the
        // host with fewer replicas overall, so the totals even out too.
        var perVolume = CountPerVolume(map, up, pg => pg.Replicas);
        var total = Totals(perVolume, up);
        var epoch = map.Epoch + 1;
        var moves = 0;
        var next = MapGroups(map, (volume, pg) =>
        {
            if (pg.Replicas.Length != volume.ReplicationFactor || !pg.Absent.IsEmpty)
            {
                return pg;
            }
            var load = perVolume[volume.VolumeId];
            var from = pg.Replicas.Where(load.ContainsKey).OrderByDescending(h => load[h]).ThenByDescending(h => total[h]).ThenBy(h => h, StringComparer.Ordinal).FirstOrDefault();
            var to = up.Where(h => !pg.References(h)).OrderBy(h => load[h]).ThenBy(h => total[h]).ThenBy(h => h, StringComparer.Ordinal).FirstOrDefault();
            if (from is null || to is null || load[from] - load[to] < 2)
            {
                return pg;
            }
            load[from]--;
            load[to]++;
            total[from]--;
            total[to]++;
            moves++;
            return pg with { Leaving = pg.Leaving.Add(from), Pending = pg.Pending.Add(new PendingReplica(to, epoch, Resync: false)) };
        });
        return moves > 0 ? next with { Epoch = epoch } : map;
    }

    private static ClusterMap PlanPrimaryOrder(ClusterMap map, List<string> up)
    {
        var perVolume = CountPerVolume(map, up, pg => pg.IsAvailable ? [pg.Primary] : []);
        var total = Totals(perVolume, up);
        var swaps = 0;
        var next = MapGroups(map, (volume, pg) =>
        {
            var primaries = perVolume[volume.VolumeId];
            if (!pg.IsAvailable || !primaries.ContainsKey(pg.Primary))
            {
                return pg;
            }
            var current = pg.Primary;
            var better = pg.Replicas.Skip(1).Where(primaries.ContainsKey).OrderBy(h => primaries[h]).ThenBy(h => total[h]).ThenBy(h => h, StringComparer.Ordinal).FirstOrDefault();
            if (better is null || primaries[current] - primaries[better] < 2)
            {
                return pg;
            }
            primaries[current]--;
            primaries[better]++;
            total[current]--;
            total[better]++;
            swaps++;
            return pg with { Replicas = [better, .. pg.Replicas.Remove(better)] };
        });
        return swaps > 0 ? next with { Epoch = map.Epoch + 1 } : map;
    }

    /// <summary>Per volume, how many of <paramref name="select"/>'s hosts each Up host is, over the volume's groups.</summary>
    private static Dictionary<Guid, Dictionary<string, int>> CountPerVolume(ClusterMap map, List<string> up, Func<PlacementGroup, IEnumerable<string>> select)
    {
        var counts = new Dictionary<Guid, Dictionary<string, int>>();
        foreach (var volume in map.Volumes)
        {
            var load = up.ToDictionary(h => h, _ => 0, StringComparer.Ordinal);
            foreach (var host in volume.PlacementGroups.SelectMany(select))
            {
                if (load.TryGetValue(host, out var count))
                {
                    load[host] = count + 1;
                }
            }
            counts[volume.VolumeId] = load;
        }
        return counts;
    }

    private static Dictionary<string, int> Totals(Dictionary<Guid, Dictionary<string, int>> perVolume, List<string> up) =>
        up.ToDictionary(h => h, h => perVolume.Values.Sum(load => load[h]), StringComparer.Ordinal);

    private static PlacementGroup Rejoin(PlacementGroup pg, string hostId, long epoch)
    {
        if (!pg.Absent.Contains(hostId))
        {
            return pg;
        }
        if (!pg.IsAvailable)
        {
            // No acting replica to copy from. Only the host that left last has every acknowledged
            // write (writes went on without the others); it alone may take the group back.
            return pg.Absent[^1] == hostId
                ? pg with { Replicas = [hostId], Absent = pg.Absent.Remove(hostId) }
                : pg;
        }
        return pg with
        {
            Absent = pg.Absent.Remove(hostId),
            Pending = pg.Pending.Add(new PendingReplica(hostId, epoch, Resync: true)),
        };
    }

    /// <summary>Acting and pending replicas per host that may take new ones (Up, not near full), over all volumes.</summary>
    private static Dictionary<string, int> ReplicaLoad(ClusterMap map)
    {
        var up = map.PlacementHostIds().ToList();
        return Totals(CountPerVolume(map, up, pg => pg.Receivers), up);
    }

    private static string? LeastLoaded(Dictionary<string, int> load, PlacementGroup pg) =>
        load.Keys.Where(h => !pg.References(h))
            .OrderBy(h => load[h]).ThenBy(h => h, StringComparer.Ordinal)
            .FirstOrDefault();

    private static ClusterMap MapGroups(ClusterMap map, Func<PlacementGroup, PlacementGroup> change) =>
        MapGroups(map, (_, pg) => change(pg));

    private static ClusterMap MapGroups(ClusterMap map, Func<VolumeInfo, PlacementGroup, PlacementGroup> change)
    {
        var volumes = ImmutableArray.CreateBuilder<VolumeInfo>(map.Volumes.Length);
        var any = false;
        foreach (var volume in map.Volumes)
        {
            var groups = volume.PlacementGroups.Select(pg => change(volume, pg)).ToImmutableArray();
            var same = groups.SequenceEqual(volume.PlacementGroups);
            any |= !same;
            volumes.Add(same ? volume : volume with { PlacementGroups = groups });
        }
        return any ? map with { Volumes = volumes.MoveToImmutable() } : map;
    }

    private static ClusterMap ReplaceGroup(ClusterMap map, VolumeInfo volume, PlacementGroup group) =>
        map with { Volumes = map.Volumes.Replace(volume, volume with { PlacementGroups = volume.PlacementGroups.SetItem(group.Index, group) }) };
}
