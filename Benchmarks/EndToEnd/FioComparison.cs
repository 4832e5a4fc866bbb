using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Library;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Maps;

namespace OrleansStorage.Benchmarks.EndToEnd;

/// <summary>
/// A fio workload, run the same way against every target. <paramref name="FsyncEach"/>: a flush
/// after every write (fio <c>--fsync=1</c>), what a database commit asks of a disk.
/// </summary>
public sealed record Workload(string Name, string Rw, string BlockSize, int QueueDepth, bool FsyncEach = false)
{
    public bool IsThroughput => BlockSize == "1M";
    public bool IsWrite => Rw.Contains("write", StringComparison.Ordinal);
}

/// <summary>Where fio sends its I/O: a raw file, nbdkit, or one of our volumes over our NBD export.</summary>
public sealed record Target(string Name, string[] FioArguments, bool Ours, int ReplicationFactor = 0);

public sealed record Measurement(string Workload, string Target, double MiBPerSecond, double Iops, double P50Microseconds, double P99Microseconds);

/// <summary><c>ostor put</c> or <c>get</c> of <see cref="FioComparison.TransferBytes"/> into a factor-2 volume, as a person runs it: each run its own CLI process.</summary>
public sealed record TransferMeasurement(string Command, double[] MiBPerSecond)
{
    public double Median => MiBPerSecond.Order().ElementAt(MiBPerSecond.Length / 2);
}

/// <summary>
/// The side-by-side benchmark of infra/bench: the same fio workloads, one after another, against
/// (1) a raw file on the same disk, (2) nbdkit serving a file on the same disk, (3..) our volumes at
/// replication factor 1, 2 and 3 over our NBD export. Prints one table with ratios and writes it
/// as JSON and Markdown under the output folder.
/// </summary>
public sealed class FioComparison(string outputDirectory, TimeSpan runtime, long sizeBytes, IReadOnlyList<string> gateways)
{
    public static readonly Workload[] Workloads =
    [
        new("seq-write 1M QD8", "write", "1M", 8),
        new("seq-read 1M QD8", "read", "1M", 8),
        new("rand-write 4K QD1", "randwrite", "4k", 1),
        new("rand-read 4K QD1", "randread", "4k", 1),
        new("rand-write 4K QD32", "randwrite", "4k", 32),
        new("rand-read 4K QD32", "randread", "4k", 32),
        new("rand-write 4K QD1 fsync", "randwrite", "4k", 1, FsyncEach: true),
    ];

    public async Task<int> RunAsync()
    {
        foreach (var tool in new[] { "fio", "nbdkit" })
        {
            if (!File.Exists($"/usr/bin/{tool}"))
            {
                Console.Error.WriteLine($"bench: {tool} is not installed (apt-get install fio nbdkit; infra/bench does this)");
                return 2;
            }
        }
        Directory.CreateDirectory(outputDirectory);
        // infra/bench runs the local cluster, which speaks TLS with the certificates in .data/pki.
        var options = new OstorClientOptions { PkiDirectory = Environment.GetEnvironmentVariable("OSTOR_PKI") ?? "" };
        options.Gateways.Clear();
        foreach (var gateway in gateways)
        {
            options.Gateways.Add(gateway);
        }
        await using var client = await OstorClient.ConnectAsync(options);
        var map = await client.GetMapAsync();
        var upHosts = map.Hosts.Count(h => h.State == HostState.Up);
        var factors = Enumerable.Range(1, Math.Min(3, upHosts)).ToList();
        foreach (var factor in factors)
        {
            await PrepareVolumeAsync(client, $"bench-f{factor}", factor);
        }

        await using var nbd = new NbdServer(client, new NbdServerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) }, NullLogger.Instance);
        nbd.Start();

        var rawFile = Path.Combine(outputDirectory, "raw.img");
        var peerFile = Path.Combine(outputDirectory, "nbdkit.img");
        foreach (var file in new[] { rawFile, peerFile })
        {
            await using var stream = File.Create(file);
            stream.SetLength(sizeBytes);
        }
        var transfers = factors.Contains(2) ? await MeasureTransfersAsync() : [];
        return await MeasureAllAsync(nbd, rawFile, peerFile, factors, upHosts, transfers);
    }

    /// <summary>64 MiB: the size the issue's put/get target names.</summary>
    public const int TransferBytes = 64 << 20;

    /// <summary>
    /// <c>ostor put</c> then <c>get</c> of 64 MiB into bench-f2, three times each, with the CLI of
    /// this build (its own process, so its start is in the number, as for a person), reading the
    /// rate it prints.
    /// </summary>
    private async Task<TransferMeasurement[]> MeasureTransfersAsync()
    {
        var file = Path.Combine(outputDirectory, "transfer.bin");
        var back = Path.Combine(outputDirectory, "transfer-back.bin");
        await File.WriteAllBytesAsync(file, RandomNumberGenerator.GetBytes(TransferBytes));
        var put = new double[3];
        var get = new double[3];
        for (var i = 0; i < put.Length; i++)
        {
            put[i] = await RunCliAsync("put", "bench-f2", file);
            get[i] = await RunCliAsync("get", "bench-f2", back, "--length", $"{TransferBytes}");
            Console.Error.WriteLine($"  ostor put/get 64 MiB, f2: {put[i],6:0.0} / {get[i],6:0.0} MiB/s");
        }
        var stored = await File.ReadAllBytesAsync(file);
        var returned = await File.ReadAllBytesAsync(back);
        if (!stored.AsSpan().SequenceEqual(returned))
        {
            throw new InvalidOperationException("ostor get returned other bytes than ostor put stored");
        }
        File.Delete(file);
        File.Delete(back);
        return [new("ostor put", put), new("ostor get", get)];
    }

    private async Task<double> RunCliAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ostor.dll"));
        start.ArgumentList.Add("--gateway");
        start.ArgumentList.Add(string.Join(',', gateways));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start ostor");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        var output = await stdout + await stderr;
        // "put 'FILE' into 'VOL': 64.0 MiB in 0.56 s (114.7 MiB/s, slowest chunk 306 ms)"
        var rate = System.Text.RegularExpressions.Regex.Match(output, @"\(([0-9.]+) MiB/s");
        if (process.ExitCode != 0 || !rate.Success)
        {
            throw new InvalidOperationException($"ostor {string.Join(' ', arguments)} failed ({process.ExitCode}): {output}");
        }
        return double.Parse(rate.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private async Task<int> MeasureAllAsync(NbdServer nbd, string rawFile, string peerFile, List<int> factors, int upHosts, TransferMeasurement[] transfers)
    {
        var targets = new List<Target>
        {
            new("raw file", ["--ioengine=io_uring", $"--filename={rawFile}"], Ours: false),
            new("nbdkit", [], Ours: false), // its URI is known once nbdkit runs, just before its turn
        };
        targets.AddRange(factors.Select(f => new Target($"ostor f{f}", ["--ioengine=nbd", $"--uri=nbd://127.0.0.1:{nbd.LocalEndpoint.Port}/bench-f{f}"], Ours: true, f)));

        var results = new List<Measurement>();
        Console.Error.WriteLine($"bench: {Workloads.Length} workloads x {targets.Count} targets, {runtime.TotalSeconds:0} s each, {sizeBytes >> 20} MiB per target, {upHosts} hosts");
        foreach (var target in targets)
        {
            // Every target starts with no dirty data of an earlier one still being written back
            // (on two cores that writeback would be charged to whoever runs next).
            await SyncAsync();
            // nbdkit runs only for its own turn, so nothing of it is left to chance meanwhile.
            using var peer = target.Name == "nbdkit" ? await StartNbdkitAsync(peerFile) : null;
            var current = peer is null ? target : target with { FioArguments = ["--ioengine=nbd", $"--uri=nbd://127.0.0.1:{peer.Port}/"] };
            try
            {
                foreach (var workload in Workloads)
                {
                    Console.Error.Write($"  {target.Name,-9} {workload.Name,-20} ");
                    var measurement = await RunFioAsync(current, workload);
                    results.Add(measurement);
                    Console.Error.WriteLine(workload.IsThroughput
                        ? $"{measurement.MiBPerSecond,8:0.0} MiB/s"
                        : $"{measurement.Iops,8:0} IOPS");
                }
            }
            finally
            {
                peer?.Process.Kill(entireProcessTree: true);
            }
            // Deleting a baseline's file drops its dirty pages instead of writing them back.
            foreach (var arg in target.FioArguments.Where(a => a.StartsWith("--filename=", StringComparison.Ordinal)))
            {
                File.Delete(arg["--filename=".Length..]);
            }
            if (target.Name == "nbdkit")
            {
                File.Delete(peerFile);
            }
        }

        var report = BenchReport.Markdown(results, targets, runtime, sizeBytes, upHosts, transfers);
        Console.WriteLine(report);
        var stamp = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        await File.WriteAllTextAsync(Path.Combine(outputDirectory, $"bench-{stamp}.md"), report);
        await File.WriteAllTextAsync(Path.Combine(outputDirectory, $"bench-{stamp}.json"),
            JsonSerializer.Serialize(new { runtimeSeconds = runtime.TotalSeconds, sizeBytes, hosts = upHosts, results, transfers }, new JsonSerializerOptions { WriteIndented = true }));
        File.Copy(Path.Combine(outputDirectory, $"bench-{stamp}.md"), Path.Combine(outputDirectory, "latest.md"), overwrite: true);
        Console.Error.WriteLine($"bench: wrote {Path.Combine(outputDirectory, $"bench-{stamp}.md")} and .json");
        File.Delete(rawFile);
        File.Delete(peerFile);
        return 0;
    }

    private async Task PrepareVolumeAsync(OstorClient client, string name, int factor)
    {
        var existing = (await client.GetMapAsync()).FindVolume(name);
        if (existing is not null && (existing.SizeBytes != sizeBytes || existing.ReplicationFactor != factor))
        {
            await client.DeleteVolumeAsync(name);
            existing = null;
        }
        if (existing is null)
        {
            await client.CreateVolumeAsync(name, sizeBytes, factor);
        }
    }

    private async Task<Measurement> RunFioAsync(Target target, Workload workload)
    {
        var arguments = new List<string>
        {
            "--name=bench", $"--rw={workload.Rw}", $"--bs={workload.BlockSize}", $"--iodepth={workload.QueueDepth}",
            $"--size={sizeBytes}", "--time_based", $"--runtime={runtime.TotalSeconds:0}", "--ramp_time=1",
            "--random_generator=tausworthe64", "--randseed=42", "--output-format=json",
        };
        if (workload.FsyncEach)
        {
            arguments.Add("--fsync=1");
        }
        arguments.AddRange(target.FioArguments);
        var start = new ProcessStartInfo("fio") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        arguments.ForEach(start.ArgumentList.Add);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        var output = await stdout;
        var jsonStart = output.IndexOf('{', StringComparison.Ordinal); // fio's nbd engine prints a line before the JSON
        if (process.ExitCode != 0 || jsonStart < 0)
        {
            throw new InvalidOperationException($"fio failed on {target.Name} / {workload.Name}: {await stderr}{output}");
        }
        var job = JsonDocument.Parse(output[jsonStart..]).RootElement.GetProperty("jobs")[0];
        var side = job.GetProperty(workload.IsWrite ? "write" : "read");
        var percentiles = side.GetProperty("clat_ns").GetProperty("percentile");
        return new Measurement(workload.Name, target.Name,
            side.GetProperty("bw").GetDouble() / 1024,
            side.GetProperty("iops").GetDouble(),
            percentiles.GetProperty("50.000000").GetDouble() / 1000,
            percentiles.GetProperty("99.000000").GetDouble() / 1000);
    }

    private static async Task SyncAsync()
    {
        using var sync = Process.Start(new ProcessStartInfo("sync") { UseShellExecute = false })!;
        await sync.WaitForExitAsync();
    }

    private sealed record RunningPeer(Process Process, int Port) : IDisposable
    {
        public void Dispose() => Process.Dispose();
    }

    private async Task<RunningPeer?> StartNbdkitAsync(string file)
    {
        var port = FreePort();
        var process = StartNbdkit(file, port, Path.Combine(outputDirectory, "nbdkit.log"));
        await WaitForPortAsync(port);
        return new RunningPeer(process, port);
    }

    /// <summary>
    /// nbdkit serving <paramref name="file"/> for one target's turn; the caller kills it after.
    /// In a session of its own (setsid), with SIGHUP and SIGPIPE ignored (.NET children start with
    /// default signal actions; fio may close a connection with replies in flight), and not
    /// --exit-with-parent (that parent-death signal fires when the forking *thread* exits, and
    /// .NET forks from pool threads). The log gets nbdkit's output and, if it ever ends on its
    /// own, its exit status.
    /// </summary>
    private static Process StartNbdkit(string file, int port, string logPath)
    {
        var start = new ProcessStartInfo("setsid") { UseShellExecute = false };
        foreach (var argument in new[]
        {
            "sh", "-c", "trap '' HUP PIPE; nbdkit --foreground --port=\"$1\" --ipaddr=127.0.0.1 file file=\"$2\" >\"$3\" 2>&1; echo \"nbdkit exit status $? at $(date +%T)\" >>\"$3\"",
            "nbdkit", port.ToString(CultureInfo.InvariantCulture), file, logPath,
        })
        {
            start.ArgumentList.Add(argument);
        }
        return Process.Start(start)!;
    }

    private static async Task WaitForPortAsync(int port)
    {
        for (var i = 0; i < 100; i++)
        {
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException)
            {
                await Task.Delay(100);
            }
        }
        throw new InvalidOperationException($"nbdkit did not listen on port {port}");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>The table: every measurement, ours as ratios to nbdkit and the raw file, and the data path's targets (issue 12) checked.</summary>
public static class BenchReport
{
    public static string Markdown(IReadOnlyList<Measurement> results, IReadOnlyList<Target> targets, TimeSpan runtime, long sizeBytes, int hosts, IReadOnlyList<TransferMeasurement> transfers)
    {
        Measurement Find(string workload, string target) => results.Single(r => r.Workload == workload && r.Target == target);
        static double Value(Workload w, Measurement m) => w.IsThroughput ? m.MiBPerSecond : m.Iops;
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"fio, {runtime.TotalSeconds:0} s per run, {sizeBytes >> 20} MiB per target, {hosts} hosts, {Environment.ProcessorCount} cores");
        text.AppendLine();
        text.AppendLine("| workload | target | MiB/s | IOPS | p50 | p99 | x nbdkit | x raw |");
        text.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var workload in FioComparison.Workloads)
        {
            var peer = Find(workload.Name, "nbdkit");
            var raw = Find(workload.Name, "raw file");
            foreach (var target in targets)
            {
                var m = Find(workload.Name, target.Name);
                var ratios = target.Ours
                    ? string.Create(CultureInfo.InvariantCulture, $"{Value(workload, m) / Value(workload, peer):0.00} | {Value(workload, m) / Value(workload, raw):0.00}")
                    : "| ";
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"| {workload.Name} | {target.Name} | {m.MiBPerSecond:0.0} | {m.Iops:0} | {Latency(m.P50Microseconds)} | {Latency(m.P99Microseconds)} | {ratios} |");
            }
        }
        text.AppendLine();
        text.AppendLine("Targets (ratio to nbdkit in the same run):");
        var f1 = targets.FirstOrDefault(t => t.ReplicationFactor == 1)?.Name;
        var f2 = targets.FirstOrDefault(t => t.ReplicationFactor == 2)?.Name;
        if (f1 is not null)
        {
            void Check(string what, double actual, double goal, bool higherIsBetter = true)
            {
                var met = higherIsBetter ? actual >= goal : actual <= goal;
                text.AppendLine(CultureInfo.InvariantCulture, $"- {what}: {actual:0.00} (target {(higherIsBetter ? ">=" : "<=")} {goal:0.0}) {(met ? "met" : "NOT met")}");
            }
            // The data path's targets (docs/performance.md, "The data port: before and after").
            var goals = new Dictionary<string, double>
            {
                ["seq-write 1M QD8"] = 0.4,
                ["seq-read 1M QD8"] = 0.5,
                ["rand-write 4K QD32"] = 0.8,
                ["rand-read 4K QD32"] = 0.6,
            };
            foreach (var (workload, goal) in goals)
            {
                var w = FioComparison.Workloads.Single(w => w.Name == workload);
                Check($"{w.Name}, f1 / nbdkit", Value(w, Find(w.Name, f1)) / Value(w, Find(w.Name, "nbdkit")), goal);
            }
            foreach (var w in FioComparison.Workloads.Where(w => w.QueueDepth == 1 && !w.FsyncEach))
            {
                Check($"{w.Name} p50 latency, f1 / nbdkit", Find(w.Name, f1).P50Microseconds / Find(w.Name, "nbdkit").P50Microseconds, 2.0, higherIsBetter: false);
            }
            if (f2 is not null)
            {
                foreach (var w in FioComparison.Workloads.Where(w => w.FsyncEach))
                {
                    Check($"{w.Name}, f2 / nbdkit", Find(w.Name, f2).Iops / Find(w.Name, "nbdkit").Iops, 0.4);
                }
                foreach (var w in FioComparison.Workloads.Where(w => w.IsWrite))
                {
                    Check($"{w.Name}, f2 / f1", Value(w, Find(w.Name, f2)) / Value(w, Find(w.Name, f1)), 0.6);
                }
            }
        }
        foreach (var transfer in transfers)
        {
            var median = transfer.Median;
            text.AppendLine(CultureInfo.InvariantCulture,
                $"- {transfer.Command} of 64 MiB, f2, median of {transfer.MiBPerSecond.Length} (MiB/s): {median:0} (runs {string.Join(", ", transfer.MiBPerSecond.Select(r => r.ToString("0", CultureInfo.InvariantCulture)))}; target >= 400) {(median >= 400 ? "met" : "NOT met")}");
        }
        return text.ToString();
    }

    private static string Latency(double microseconds) =>
        microseconds >= 1000
            ? string.Create(CultureInfo.InvariantCulture, $"{microseconds / 1000:0.0} ms")
            : string.Create(CultureInfo.InvariantCulture, $"{microseconds:0} us");
}
