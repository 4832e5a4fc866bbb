using System.Collections.Immutable;
using Microsoft.Extensions.Options;
using OrleansStorage.Hosting;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Silo.Web;

/// <summary>
/// What the dashboard shows, gathered from the management service (map, hosts, recent changes)
/// and from every serving host's storage server (use, copies, I/O totals). Gathered at most once
/// a second whoever asks: a hundred open pages cost the cluster what one does. Rates are the
/// difference between two gatherings, per host, so a host that did not answer once makes no
/// spike when it answers again.
/// </summary>
public sealed class ClusterOverview(IGrainFactory grains, IOptions<StorageServerOptions> storage, TimeProvider clock)
{
    private static readonly TimeSpan MaxAge = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan HostTimeout = TimeSpan.FromSeconds(1);

    private readonly Lock _lock = new();
    private Task<OverviewView>? _current;
    private DateTimeOffset _currentAt;
    private Sample? _previous;

    public Task<OverviewView> GetAsync()
    {
        lock (_lock)
        {
            var now = clock.GetUtcNow();
            if (_current is null || (_current.IsCompleted && now - _currentAt >= MaxAge))
            {
                _currentAt = now;
                _current = GatherAsync();
            }
            return _current;
        }
    }

    private async Task<OverviewView> GatherAsync()
    {
        var management = grains.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey);
        var status = await management.GetStatusAsync();
        // While the database is away the management service hands out no map, but status carries it for display.
        var map = status.UnconfirmedMap ?? await management.GetMapAsync();
        var hosts = await management.GetHostsAsync();
        var changes = await management.GetRecentChangesAsync();
        var serving = hosts.Where(h => h.Host.State is HostState.Up or HostState.Draining).Select(h => h.Host.HostId).ToList();
        var answers = await Task.WhenAll(serving.Select(AskAsync));
        var statuses = answers.Where(a => a is not null).ToDictionary(a => a!.HostId, a => a!);
        var sample = new Sample(clock.GetUtcNow(), statuses.ToDictionary(s => s.Key, s => s.Value.VolumeIo.ToDictionary(v => v.VolumeId)));
        var rates = Rates(_previous, sample);
        _previous = sample;

        return new OverviewView(
            sample.At,
            map.ClusterId,
            map.Epoch,
            status.HostId.Length > 0 ? status.HostId : status.Silo,
            storage.Value.HostId,
            [.. hosts.OrderBy(h => h.Host.HostId, StringComparer.Ordinal).Select(h => HostView(h, statuses.GetValueOrDefault(h.Host.HostId)))],
            [.. map.Volumes.OrderBy(v => v.Name, StringComparer.Ordinal).Select(v => VolumeView(v, rates.GetValueOrDefault(v.VolumeId)))],
            [.. statuses.Values.SelectMany(s => s.Copies).Select(c => CopyView(c, map))],
            [.. changes.Reverse().Select(c => new ChangeView(c.Epoch, c.At, c.Reason))],
            status.DatabaseProblem);
    }

    private async Task<StorageServerStatus?> AskAsync(string hostId)
    {
        try
        {
            return await grains.GetGrain<IStorageServerGrain>(hostId).GetStatusAsync().WaitAsync(HostTimeout);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return null; // shown as not answering; the map says whether it is down
        }
    }

    private static HostView HostView(HostReport report, StorageServerStatus? status) => new(
        report.Host.HostId,
        StateName(report.Host.State),
        report.Host.StateSince,
        report.Host.CapacityBytes,
        status?.BytesUsed,
        report.MismatchReports,
        report.Host.Endpoint,
        report.Host.DataEndpoint,
        status is not null);

    private static VolumeView VolumeView(VolumeInfo volume, Rate? rate)
    {
        var groups = volume.PlacementGroups.Select(pg => new GroupView(
            pg.Index,
            HealthName(pg.HealthAt(volume.ReplicationFactor)),
            [.. pg.Replicas],
            [.. pg.Pending.Select(p => p.HostId)])).ToArray();
        var worst = volume.PlacementGroups.Select(pg => pg.HealthAt(volume.ReplicationFactor)).DefaultIfEmpty(GroupHealth.Healthy).Max();
        return new VolumeView(
            volume.Name,
            volume.SizeBytes,
            volume.ReplicationFactor,
            HealthName(worst),
            Enum.GetValues<GroupHealth>().ToDictionary(HealthName, h => groups.Count(g => g.Health == HealthName(h))),
            groups,
            [.. volume.Snapshots.Select(s => s.Name)],
            volume.Parent is null ? null : "clone",
            rate ?? new Rate(0, 0, 0, 0));
    }

    private static CopyView CopyView(CopyProgress copy, ClusterMap map) => new(
        copy.SourceHostId,
        copy.Job.TargetHostId,
        map.FindVolume(copy.Job.VolumeId)?.Name ?? copy.Job.VolumeId.ToString(),
        copy.Job.GroupIndex,
        copy.Job.Resync,
        copy.SegmentsDone,
        copy.SegmentsTotal,
        copy.BytesCopied);

    /// <summary>Per volume, the I/O per second between two samples, summed over the hosts in both.</summary>
    private static Dictionary<Guid, Rate> Rates(Sample? before, Sample now)
    {
        var rates = new Dictionary<Guid, Rate>();
        if (before is null)
        {
            return rates;
        }
        var seconds = (now.At - before.At).TotalSeconds;
        if (seconds <= 0)
        {
            return rates;
        }
        foreach (var (host, volumes) in now.ByHost)
        {
            if (!before.ByHost.TryGetValue(host, out var earlier))
            {
                continue;
            }
            foreach (var (volumeId, totals) in volumes)
            {
                var then = earlier.GetValueOrDefault(volumeId) ?? new VolumeIoTotals(volumeId, 0, 0, 0, 0);
                var sum = rates.GetValueOrDefault(volumeId) ?? new Rate(0, 0, 0, 0);
                // A host that restarted counts from zero again: no negative rates.
                rates[volumeId] = new Rate(
                    sum.ReadIops + (Math.Max(0, totals.ReadOperations - then.ReadOperations) / seconds),
                    sum.WriteIops + (Math.Max(0, totals.WriteOperations - then.WriteOperations) / seconds),
                    sum.ReadBytesPerSecond + (Math.Max(0, totals.ReadBytes - then.ReadBytes) / seconds),
                    sum.WriteBytesPerSecond + (Math.Max(0, totals.WriteBytes - then.WriteBytes) / seconds));
            }
        }
        return rates;
    }

    private static string StateName(HostState state) => state.ToString();

    private static string HealthName(GroupHealth health) => health.ToString().ToLowerInvariant();

    private sealed record Sample(DateTimeOffset At, Dictionary<string, Dictionary<Guid, VolumeIoTotals>> ByHost);
}

public sealed record OverviewView(
    DateTimeOffset At,
    Guid ClusterId,
    long Epoch,
    string Management,
    string ServedBy,
    ImmutableArray<HostView> Hosts,
    ImmutableArray<VolumeView> Volumes,
    ImmutableArray<CopyView> Copies,
    ImmutableArray<ChangeView> Changes,
    string? DatabaseProblem);

/// <param name="Answered">Its storage server answered this gathering (its use is known).</param>
public sealed record HostView(string Id, string State, DateTimeOffset StateSince, long Capacity, long? Used, long Mismatches, string Endpoint, string DataEndpoint, bool Answered);

public sealed record VolumeView(
    string Name,
    long Size,
    int Factor,
    string Health,
    Dictionary<string, int> Groups,
    GroupView[] PlacementGroups,
    string[] Snapshots,
    string? Kind,
    Rate Rate);

public sealed record GroupView(int Index, string Health, string[] Replicas, string[] Pending);

public sealed record CopyView(string Source, string Target, string Volume, int Group, bool Resync, long Done, long Total, long Bytes);

public sealed record ChangeView(long Epoch, DateTimeOffset At, string Reason);

public sealed record Rate(double ReadIops, double WriteIops, double ReadBytesPerSecond, double WriteBytesPerSecond);
