using System.Globalization;
using System.Text;
using OrleansStorage.Client.Library;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Client.Cli;

/// <summary>What <c>ostor status</c> prints: epoch, hosts with state, degraded and recovering groups, copies with progress bars.</summary>
public static class ClusterStatusView
{
    private static readonly TimeSpan RecentWindow = TimeSpan.FromHours(1);

    /// <summary>The line <c>ostor status</c> and <c>ostor host list</c> print while the database does not answer, and what that stops; null while it does.</summary>
    public static string? DatabaseLine(ManagementStatus management) =>
        management.DatabaseProblem is { } problem ? "DATABASE UNREACHABLE: " + problem : null;

    public static string Render(ClusterStatus status, DateTimeOffset now)
    {
        var map = status.Map;
        var text = new StringBuilder();
        var groups = map.AllGroups().Count();
        text.AppendLine(Invariant($"epoch {map.Epoch}   management on {status.Management.Silo} (active since {status.Management.ActivatedAt:HH:mm:ss}, loaded epoch {status.Management.ActivatedAtEpoch})"));
        if (DatabaseLine(status.Management) is { } database)
        {
            text.AppendLine(database);
        }
        text.AppendLine(Invariant($"placement groups: {groups} in {map.Volumes.Length} volumes; {status.DegradedGroups} degraded, {status.RecoveringGroups} recovering, {status.UnavailableGroups} unavailable"));
        text.AppendLine();

        var rows = status.Hosts.OrderBy(h => h.Host.HostId, StringComparer.Ordinal).Select(h => new[]
        {
            h.Host.HostId,
            h.Host.State.ToString(),
            h.Host.StateSince == default ? "" : Ago(now - h.Host.StateSince),
            Count(map, pg => pg.IsAvailable && pg.Primary == h.Host.HostId),
            Count(map, pg => pg.Contains(h.Host.HostId)),
            Count(map, pg => pg.FindPending(h.Host.HostId) is not null),
            Count(map, pg => pg.Absent.Contains(h.Host.HostId)),
            h.Server is null ? "-" : ByteSize.Format(h.Server.BytesUsed),
            h.Server is null ? "-" : h.Server.Epoch.ToString(CultureInfo.InvariantCulture),
            h.Error ?? "",
        });
        Table.Print(text, ["HOST", "STATE", "SINCE", "PRIMARY", "ACTING", "FILLING", "ABSENT", "USED", "EPOCH", ""], rows);

        text.AppendLine();
        RenderScrubs(text, status, now);

        var copies = status.Copies.OrderBy(c => c.Job.TargetHostId, StringComparer.Ordinal).ThenBy(c => c.Job.GroupIndex).ToList();
        text.AppendLine();
        var recent = LastEpisode(status.FinishedCopies.Where(c => c.Failure is null && now - c.Finished!.Value < RecentWindow));
        if (recent.Count > 0)
        {
            // Wall-clock throughput of the recovery as a whole: all bytes over first start to last finish.
            var bytes = recent.Sum(c => c.BytesCopied);
            var seconds = Math.Max((recent.Max(c => c.Finished!.Value) - recent.Min(c => c.Started)).TotalSeconds, 0.001);
            text.AppendLine(Invariant(
                $"last recovery (finished {Ago(now - recent.Max(c => c.Finished!.Value))}): {recent.Count} copies ({recent.Count(c => c.Job.Resync)} resyncs), {recent.Sum(c => c.SegmentsCopied)} of {recent.Sum(c => c.SegmentsTotal)} segments sent, {ByteSize.Format(bytes)} in {seconds:0.0} s = {bytes / seconds / (1 << 20):0.0} MiB/s"));
        }
        if (copies.Count == 0)
        {
            text.AppendLine(status.RecoveringGroups == 0 ? "no recovery in progress" : "recovery planned; copies start within a second");
            return text.ToString();
        }
        text.AppendLine(Invariant($"copies in progress ({copies.Count}):"));
        foreach (var copy in copies)
        {
            var volume = map.FindVolume(copy.Job.VolumeId)?.Name ?? copy.Job.VolumeId.ToString();
            var fraction = copy.SegmentsTotal == 0 ? 0 : (double)copy.SegmentsDone / copy.SegmentsTotal;
            text.AppendLine(Invariant(
                $"  {volume}/pg {copy.Job.GroupIndex,-3} {copy.SourceHostId} -> {copy.Job.TargetHostId} {(copy.Job.Resync ? "resync" : "fill  ")} {ProgressBar.Render(fraction, 20)} {copy.SegmentsDone}/{copy.SegmentsTotal} segments, {ByteSize.Format(copy.BytesCopied)} at {copy.BytesPerSecond(now) / (1 << 20):0.0} MiB/s"));
        }
        return text.ToString();
    }

    /// <summary>A counter the hosts keep, summed and per host; nothing when it is zero everywhere.</summary>
    private static void RenderCount(StringBuilder text, List<StorageServerStatus> servers, Func<StorageServerStatus, long> count, string what)
    {
        var total = servers.Sum(count);
        if (total > 0)
        {
            var perHost = servers.Where(s => count(s) > 0).OrderBy(s => s.HostId, StringComparer.Ordinal).Select(s => Invariant($"{s.HostId} {count(s)}"));
            text.AppendLine(Invariant($"{what}: {total} ({string.Join(", ", perHost)})"));
        }
    }

    /// <summary>
    /// Per volume, the background scrub: each primary scrubs the groups it leads, so a volume's
    /// last complete scrub is the oldest pass among its primaries; what they repaired is summed.
    /// </summary>
    private static void RenderScrubs(StringBuilder text, ClusterStatus status, DateTimeOffset now)
    {
        var servers = status.Hosts.Where(h => h.Server is not null).Select(h => h.Server!).ToList();
        var repaired = servers.Sum(s => s.BlocksRepaired);
        var lost = servers.Sum(s => s.BlocksLost);
        text.AppendLine(Invariant($"bad blocks since the hosts started: {repaired} repaired from good copies, {lost} with no good copy"));
        RenderCount(text, servers, s => s.QosDelayed, "requests held back by volume QoS limits since the hosts started");
        RenderCount(text, servers, s => s.AccessRefused, "requests refused for want of a ticket or capability since the hosts started");
        foreach (var server in servers.OrderBy(s => s.HostId, StringComparer.Ordinal))
        {
            // A pass covers every volume the host leads; its records share the pass's start.
            var pass = server.Scrubs.GroupBy(r => r.Started).MaxBy(g => g.Key);
            if (pass is not null)
            {
                var bytes = pass.Sum(r => r.BytesChecked);
                var seconds = Math.Max((pass.Max(r => r.Finished) - pass.Key).TotalSeconds, 0.001);
                text.AppendLine(Invariant($"  {server.HostId}: last scrub pass {ByteSize.Format(bytes)} in {seconds:0} s = {bytes / seconds / (1 << 20):0.0} MiB/s (pauses for client I/O included)"));
            }
        }
        foreach (var volume in status.Map.Volumes.OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            var primaries = volume.PlacementGroups.Where(pg => pg.IsAvailable).Select(pg => pg.Primary).Distinct().Count();
            var records = servers.SelectMany(s => s.Scrubs).Where(r => r.VolumeId == volume.VolumeId).ToList();
            if (records.Count == 0)
            {
                text.AppendLine(Invariant($"  scrub {volume.Name}: not yet"));
                continue;
            }
            text.AppendLine(Invariant(
                $"  scrub {volume.Name}: last complete {Ago(now - records.Min(r => r.Finished))} by {records.Count} of {primaries} primaries, {records.Sum(r => r.Segments)} segments, {ByteSize.Format(records.Sum(r => r.BytesChecked))} checked, {records.Sum(r => r.BlocksRepaired)} blocks repaired, {records.Sum(r => r.BlocksLost)} lost"));
        }
    }

    /// <summary>The latest run of copies that overlap or follow each other within a few seconds: one recovery.</summary>
    private static List<CopyProgress> LastEpisode(IEnumerable<CopyProgress> finished)
    {
        var episode = new List<CopyProgress>();
        var end = DateTimeOffset.MinValue;
        foreach (var copy in finished.OrderBy(c => c.Started))
        {
            if (copy.Started > end + TimeSpan.FromSeconds(5))
            {
                episode.Clear();
            }
            episode.Add(copy);
            end = copy.Finished!.Value > end ? copy.Finished.Value : end;
        }
        return episode;
    }

    private static string Count(ClusterMap map, Func<PlacementGroup, bool> which) =>
        map.AllGroups().Count(x => which(x.Group)).ToString(CultureInfo.InvariantCulture);

    private static string Ago(TimeSpan elapsed) =>
        elapsed.TotalSeconds < 120 ? Invariant($"{elapsed.TotalSeconds:0}s ago")
        : elapsed.TotalMinutes < 120 ? Invariant($"{elapsed.TotalMinutes:0}m ago")
        : Invariant($"{elapsed.TotalHours:0}h ago");

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Plain aligned text tables for the CLI.</summary>
public static class Table
{
    public static void Print(StringBuilder text, string[] header, IEnumerable<string[]> rows)
    {
        var all = new List<string[]> { header };
        all.AddRange(rows);
        var widths = Enumerable.Range(0, header.Length).Select(c => all.Max(r => r[c].Length)).ToArray();
        foreach (var row in all)
        {
            text.AppendLine(string.Join("  ", row.Select((cell, c) => cell.PadRight(widths[c]))).TrimEnd());
        }
    }
}
