using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Library;
using OrleansStorage.Client.Nbd;

namespace OrleansStorage.Benchmarks.EndToEnd;

/// <summary>
/// What snapshots and clones cost on the local cluster (issue 13's measurements), each beside a
/// baseline measured in the same run:
/// snapshot create latency on an idle volume and under a fio random-write load over NBD;
/// a 4 KiB write's latency when it is the first to its segment after a snapshot (a copy) and when
/// it is not; flatten's throughput against the client copying the same bytes itself.
/// </summary>
public sealed class SnapshotBench(long sizeBytes, TimeSpan loadTime, OstorClientOptions options)
{
    private const string VolumeName = "bench-snap";
    private const string CloneName = "bench-snap-clone";

    public async Task<int> RunAsync()
    {
        if (!File.Exists("/usr/bin/fio"))
        {
            Console.Error.WriteLine("bench: fio is not installed (apt-get install fio; infra/bench does this)");
            return 2;
        }
        await using var client = await OstorClient.ConnectAsync(options);
        await RemoveAsync(client);
        await client.CreateVolumeAsync(VolumeName, sizeBytes, 2);
        var volume = await client.OpenVolumeAsync(VolumeName);
        var chunk = new byte[4 << 20];
        Random.Shared.NextBytes(chunk);
        for (long at = 0; at < sizeBytes; at += chunk.Length)
        {
            await volume.WriteAsync(at, chunk.AsMemory(0, (int)Math.Min(chunk.Length, sizeBytes - at)));
        }
        Console.WriteLine($"volume {VolumeName}: {sizeBytes >> 20} MiB, factor 2, every segment written");

        // Snapshot create: idle, then under fio.
        var idle = new List<double>();
        for (var i = 0; i < 10; i++)
        {
            idle.Add(await TimeAsync(() => client.CreateSnapshotAsync(VolumeName, $"idle{i}")));
        }
        var loaded = await CreateUnderLoadAsync(client);
        Report("snapshot create, idle (ms)", idle, null);
        Report("snapshot create, under fio randwrite 4k QD16 (ms)", loaded, idle);

        // The first 4 KiB write to each segment after a snapshot copies the segment; the second does not.
        var segment = volume.Info.SegmentSizeBytes;
        var segments = (int)(sizeBytes / segment);
        var block = new byte[4096];
        var first = new List<double>();
        var second = new List<double>();
        for (var round = 0; first.Count < 128; round++)
        {
            await client.CreateSnapshotAsync(VolumeName, $"cow{round}");
            for (var s = 0; s < segments && first.Count < 128; s++)
            {
                first.Add(await TimeAsync(() => volume.WriteAsync(((long)s * segment) + 8192, block)));
                second.Add(await TimeAsync(() => volume.WriteAsync(((long)s * segment) + 16384, block)));
            }
        }
        Report("4 KiB write, not the first to its segment since the snapshot (ms)", second, null);
        Report("4 KiB write, first to its segment since the snapshot: copies it (ms)", first, second);

        // Flatten against the client copying the same bytes (read the snapshot, write the clone).
        await client.CreateSnapshotAsync(VolumeName, "gold");
        var snapshot = await client.OpenVolumeAsync($"{VolumeName}@gold");
        await client.CreateVolumeAsync(CloneName, sizeBytes, 2);
        var copy = await client.OpenVolumeAsync(CloneName);
        var copySeconds = await TimeAsync(async () =>
        {
            for (long at = 0; at < sizeBytes; at += chunk.Length)
            {
                var part = chunk.AsMemory(0, (int)Math.Min(chunk.Length, sizeBytes - at));
                await snapshot.ReadAsync(at, part);
                await copy.WriteAsync(at, part);
            }
        }) / 1000;
        await client.DeleteVolumeAsync(CloneName);
        await client.CloneVolumeAsync($"{VolumeName}@gold", CloneName, 2);
        var flattenSeconds = await TimeAsync(() => client.FlattenAsync(CloneName)) / 1000;
        var mib = sizeBytes / 1048576.0;
        Console.WriteLine($"{"client copy of the snapshot into a volume (MiB/s)",-70} {mib / copySeconds,8:0.0}");
        Console.WriteLine($"{"flatten of a clone of it (MiB/s)",-70} {mib / flattenSeconds,8:0.0}   ratio {copySeconds / flattenSeconds:0.00}");
        await RemoveAsync(client);
        return 0;
    }

    /// <summary>fio writes 4 KiB blocks at queue depth 16 through our NBD export while a snapshot is taken every half second.</summary>
    private async Task<List<double>> CreateUnderLoadAsync(OstorClient client)
    {
        await using var nbd = new NbdServer(client, new NbdServerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) }, NullLogger.Instance);
        nbd.Start();
        var start = new ProcessStartInfo("fio") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[]
        {
            "--name=load", "--ioengine=nbd", $"--uri=nbd://127.0.0.1:{nbd.LocalEndpoint.Port}/{VolumeName}", "--rw=randwrite", "--bs=4k",
            "--iodepth=16", $"--size={sizeBytes}", "--time_based", $"--runtime={loadTime.TotalSeconds:0}", "--output-format=terse",
        })
        {
            start.ArgumentList.Add(argument);
        }
        using var fio = Process.Start(start)!;
        var drained = Task.WhenAll(fio.StandardOutput.ReadToEndAsync(), fio.StandardError.ReadToEndAsync());
        await Task.Delay(TimeSpan.FromSeconds(1));
        var latencies = new List<double>();
        for (var i = 0; !fio.HasExited; i++)
        {
            latencies.Add(await TimeAsync(() => client.CreateSnapshotAsync(VolumeName, $"load{i}")));
            await Task.Delay(500);
        }
        await drained;
        if (fio.ExitCode != 0)
        {
            throw new InvalidOperationException($"fio failed: {(await drained)[1]}");
        }
        return latencies;
    }

    private static async Task RemoveAsync(OstorClient client)
    {
        var map = await client.GetMapAsync();
        if (map.FindVolume(CloneName) is not null)
        {
            await client.DeleteVolumeAsync(CloneName);
        }
        if (map.FindVolume(VolumeName) is { } volume)
        {
            foreach (var snapshot in volume.Snapshots)
            {
                await client.DeleteSnapshotAsync(VolumeName, snapshot.Name);
            }
            await client.DeleteVolumeAsync(VolumeName);
        }
    }

    private static async Task<double> TimeAsync(Func<Task> action)
    {
        var started = Stopwatch.GetTimestamp();
        await action();
        return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    private static void Report(string what, List<double> samples, List<double>? baseline)
    {
        var (p50, p99) = Percentiles(samples);
        var line = $"{what,-70} p50 {p50,8:0.00}  p99 {p99,8:0.00}  (n={samples.Count})";
        if (baseline is not null)
        {
            var (b50, b99) = Percentiles(baseline);
            line += $"   ratio p50 {p50 / b50:0.00}  p99 {p99 / b99:0.00}";
        }
        Console.WriteLine(line);
    }

    private static (double P50, double P99) Percentiles(List<double> samples)
    {
        var sorted = samples.Order().ToList();
        return (sorted[(int)(0.5 * (sorted.Count - 1))], sorted[(int)Math.Ceiling(0.99 * (sorted.Count - 1))]);
    }
}
