using System.Collections.Immutable;
using OrleansStorage.Maps;

namespace OrleansStorage.Placement;

/// <summary>
/// Chooses the replica sets of a new volume's placement groups. Spreads primaries and replicas
/// evenly over the Up hosts that are not near full, counting what the map already places on each host, and never puts
/// two replicas of one placement group on the same host. Deterministic: the same map and
/// arguments always give the same placement.
/// </summary>
public static class PlacementPlanner
{
    public static ImmutableArray<PlacementGroup> PlaceVolume(ClusterMap map, int placementGroupCount, int replicationFactor)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(placementGroupCount, 1);
        var hosts = map.PlacementHostIds().Order(StringComparer.Ordinal).ToArray();
        if (replicationFactor < 1 || replicationFactor > hosts.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(replicationFactor), replicationFactor,
                $"replication factor must be between 1 and the {hosts.Length} Up hosts that are not near full");
        }

        var primaries = new Dictionary<string, int>(StringComparer.Ordinal);
        var replicas = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var host in hosts)
        {
            primaries[host] = 0;
            replicas[host] = 0;
        }
        foreach (var pg in map.Volumes.SelectMany(v => v.PlacementGroups))
        {
            for (var r = 0; r < pg.Replicas.Length; r++)
            {
                var host = pg.Replicas[r];
                if (!replicas.ContainsKey(host))
                {
                    continue;
                }
                replicas[host]++;
                if (r == 0)
                {
                    primaries[host]++;
                }
            }
        }

        var groups = ImmutableArray.CreateBuilder<PlacementGroup>(placementGroupCount);
        var chosen = new List<string>(replicationFactor);
        for (var pg = 0; pg < placementGroupCount; pg++)
        {
            chosen.Clear();
            // Ties are broken by a rotation that starts at a different host for each PG, so an
            // empty cluster gets a round-robin layout rather than everything on the first host.
            var primary = Least(hosts, pg, chosen, h => (primaries[h], replicas[h]));
            chosen.Add(primary);
            primaries[primary]++;
            replicas[primary]++;
            while (chosen.Count < replicationFactor)
            {
                var secondary = Least(hosts, pg + chosen.Count, chosen, h => (replicas[h], 0));
                chosen.Add(secondary);
                replicas[secondary]++;
            }
            groups.Add(new PlacementGroup(pg, [.. chosen]));
        }
        return groups.MoveToImmutable();
    }

    private static string Least(string[] hosts, int rotation, List<string> excluded, Func<string, (int, int)> load)
    {
        string? best = null;
        (int, int, int) bestKey = default;
        for (var i = 0; i < hosts.Length; i++)
        {
            var host = hosts[i];
            if (excluded.Contains(host))
            {
                continue;
            }
            var (a, b) = load(host);
            var key = (a, b, ((i - rotation) % hosts.Length + hosts.Length) % hosts.Length);
            if (best is null || key.CompareTo(bestKey) < 0)
            {
                best = host;
                bestKey = key;
            }
        }
        return best ?? throw new InvalidOperationException("no host left to place a replica on");
    }
}
