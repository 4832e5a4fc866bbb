using System.Globalization;
using BenchmarkDotNet.Running;
using OrleansStorage.Benchmarks.EndToEnd;
using OrleansStorage.Client.Library;

// Benchmarks e2e [--quick] [--runtime SECONDS] [--size MiB] [--out DIR] [--gateway host:port,...]
//   the fio comparison of infra/bench (raw file, nbdkit, our volumes at factor 1..3)
// Benchmarks micro [BenchmarkDotNet arguments, e.g. --filter '*SegmentStore*']
//   the hot-path microbenchmarks
// Benchmarks snapshots [--quick] [--gateway host:port,...]
//   snapshot create latency (idle and under fio), copy-on-write write latency, flatten throughput
if (args.Length > 0 && args[0] == "micro")
{
    BenchmarkSwitcher.FromAssembly(typeof(FioComparison).Assembly).Run(args[1..]);
    return 0;
}
if (args.Length > 0 && args[0] == "snapshots")
{
    var quick = args.Contains("--quick");
    var snapshotOptions = new OstorClientOptions { PkiDirectory = Environment.GetEnvironmentVariable("OSTOR_PKI") ?? "" };
    snapshotOptions.Gateways.Clear();
    foreach (var gateway in (Environment.GetEnvironmentVariable("OSTOR_GATEWAY") ?? "127.0.0.1:30000").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
    {
        snapshotOptions.Gateways.Add(gateway);
    }
    return await new SnapshotBench(quick ? 64L << 20 : 256L << 20, TimeSpan.FromSeconds(quick ? 5 : 15), snapshotOptions).RunAsync();
}
if (args.Length == 0 || args[0] != "e2e")
{
    Console.Error.WriteLine("usage: Benchmarks e2e [--quick] [--runtime S] [--size MiB] [--out DIR] [--gateway host:port,...] | Benchmarks micro [BenchmarkDotNet args] | Benchmarks snapshots [--quick] (run through infra/bench)");
    return 2;
}
var runtime = TimeSpan.FromSeconds(10);
long size = 1L << 30;
var output = Path.Combine(Directory.GetCurrentDirectory(), ".data", "bench");
var gateways = (Environment.GetEnvironmentVariable("OSTOR_GATEWAY") ?? "127.0.0.1:30000").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
for (var i = 1; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--quick":
            runtime = TimeSpan.FromSeconds(2);
            size = 256L << 20;
            break;
        case "--runtime" when i + 1 < args.Length && int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out var seconds) && seconds > 0:
            runtime = TimeSpan.FromSeconds(seconds);
            i++;
            break;
        case "--size" when i + 1 < args.Length && long.TryParse(args[i + 1], CultureInfo.InvariantCulture, out var mib) && mib >= 16:
            size = mib << 20;
            i++;
            break;
        case "--out" when i + 1 < args.Length:
            output = Path.GetFullPath(args[++i]);
            break;
        case "--gateway" when i + 1 < args.Length:
            gateways = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            break;
        default:
            Console.Error.WriteLine($"bench: unknown or incomplete argument '{args[i]}'");
            return 2;
    }
}
return await new FioComparison(output, runtime, size, gateways).RunAsync();
