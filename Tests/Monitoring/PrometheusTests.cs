using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static OrleansStorage.Tests.Nbd.NbdClientTools;

namespace OrleansStorage.Tests.Monitoring;

/// <summary>
/// The metrics as a real Prometheus sees them: <c>infra/monitoring up</c> scraping the hosts of an
/// <c>infra/cluster</c> and an <c>ostor nbd serve --metrics</c>, with fio as the client. What fio
/// did is what the counters say; a stale request shows as a mismatch, and the count survives the
/// management service's host being killed. The hosts and the NBD server export their spans to an
/// OTLP collector named by the standard variables, as an operator would configure them.
/// </summary>
public sealed class PrometheusTests(ITestOutputHelper output)
{
    private const string Volume = "prom-vol";

    [SkippableFact]
    public async Task The_counters_match_what_fio_did_and_a_stale_request_counts_as_a_mismatch_across_a_management_failover()
    {
        Prerequisites.Require(PrivatePostgres.FindBinDirectory() is not null, "PostgreSQL is not installed");
        Require("fio", "fio");
        Require("prometheus", "prometheus");
        await using var cluster = new ScriptedCluster(output.WriteLine, hosts: 3, netns: false);
        var prometheusPort = Ports.Free();
        cluster.SetEnvironment("OSTOR_PROMETHEUS_PORT", prometheusPort.ToString(CultureInfo.InvariantCulture));
        cluster.SetEnvironment("OSTOR_PROMETHEUS_INTERVAL", "1s");
        using var collector = new OtlpCollector();
        cluster.SetEnvironment("OTEL_EXPORTER_OTLP_ENDPOINT", collector.Endpoint);
        cluster.SetEnvironment("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        await cluster.UpAsync();
        await using var admin = await cluster.ConnectAsync("admin");
        await admin.CreateVolumeAsync(Volume, 64 << 20, 2);

        var nbdPort = Ports.Free();
        var metricsPort = Ports.Free();
        using var nbd = StartNbdServer(cluster, nbdPort, metricsPort);
        try
        {
            await cluster.RunAsync("monitoring", "up", "--nbd", $"127.0.0.1:{metricsPort}");
            using var prometheus = new PrometheusApi(prometheusPort);
            var eventually = new Eventually(output);
            await eventually.UntilAsync(async () => await prometheus.ValueAsync("sum(up)") == 4, "prometheus scrapes the 3 hosts and the NBD server", TimeSpan.FromSeconds(60));

            await CountersMatchFioAsync(prometheus, eventually, nbdPort);
            // Spans of the NBD server and of the hosts (a primary's and a replica's), exported in batches.
            await eventually.UntilAsync(() => Task.FromResult(collector.Saw("nbd.write") && collector.Saw("ostor.serve write") && collector.Saw("ostor.serve replica_write")),
                "the NBD server's and the hosts' spans at the OTLP collector", TimeSpan.FromSeconds(30), () => $"{collector.Exports} exports so far");
            await MismatchesSurviveFailoverAsync(cluster, admin, prometheus, eventually);
        }
        finally
        {
            nbd.Kill(entireProcessTree: true);
        }
    }

    private async Task CountersMatchFioAsync(PrometheusApi prometheus, Eventually eventually, int nbdPort)
    {
        // Primaries count what they served; the NBD server counts what it answered.
        const string hostWrites = $"sum(ostor_data_operations_total{{volume=\"{Volume}\",op=\"write\"}})";
        const string hostReads = $"sum(ostor_data_operations_total{{volume=\"{Volume}\",op=\"read\"}})";
        const string nbdWrites = $"sum(ostor_nbd_requests_total{{export=\"{Volume}\",command=\"write\"}})";
        const string nbdReads = $"sum(ostor_nbd_requests_total{{export=\"{Volume}\",command=\"read\"}})";
        var before = new[] { await prometheus.ValueAsync(hostWrites), await prometheus.ValueAsync(hostReads), await prometheus.ValueAsync(nbdWrites), await prometheus.ValueAsync(nbdReads) };

        var fio = await ExternalProgram.RunAsync("fio", ["--name=count", "--ioengine=nbd", $"--uri=nbd://127.0.0.1:{nbdPort}/{Volume}", "--rw=randrw", "--rwmixread=40",
            "--bs=4k", "--iodepth=16", "--size=64M", "--io_size=24M", "--randrepeat=0", "--output-format=json"], TimeSpan.FromMinutes(5));
        var job = JsonDocument.Parse(fio.Stdout[fio.Stdout.IndexOf('{', StringComparison.Ordinal)..]).RootElement.GetProperty("jobs")[0];
        Assert.Equal(0, job.GetProperty("error").GetInt32());
        long writes = job.GetProperty("write").GetProperty("total_ios").GetInt64(), reads = job.GetProperty("read").GetProperty("total_ios").GetInt64();
        output.WriteLine($"fio: {writes} writes, {reads} reads of 4 KiB");
        Assert.True(writes > 1000 && reads > 1000, "fio did too little to count");

        // fio's writes of 4 KiB never cross a segment: one request each to one primary.
        double[] after = [];
        await eventually.UntilAsync(async () =>
        {
            after = [await prometheus.ValueAsync(hostWrites), await prometheus.ValueAsync(hostReads), await prometheus.ValueAsync(nbdWrites), await prometheus.ValueAsync(nbdReads)];
            return after[0] - before[0] >= writes && after[1] - before[1] >= reads && after[2] - before[2] >= writes && after[3] - before[3] >= reads;
        }, "the counters in prometheus reach what fio did", TimeSpan.FromSeconds(30),
            () => $"host writes +{after[0] - before[0]}, reads +{after[1] - before[1]}; nbd writes +{after[2] - before[2]}, reads +{after[3] - before[3]}");
        await Task.Delay(3000); // two more scrapes: anything still counting shows now
        after = [await prometheus.ValueAsync(hostWrites), await prometheus.ValueAsync(hostReads), await prometheus.ValueAsync(nbdWrites), await prometheus.ValueAsync(nbdReads)];
        output.WriteLine($"prometheus: hosts +{after[0] - before[0]} writes +{after[1] - before[1]} reads; nbd +{after[2] - before[2]} writes +{after[3] - before[3]} reads");
        AssertWithinOnePercent(writes, after[0] - before[0], "writes the primaries served");
        AssertWithinOnePercent(reads, after[1] - before[1], "reads the primaries served");
        Assert.Equal(writes, after[2] - before[2]);
        Assert.Equal(reads, after[3] - before[3]);
        // The latency histograms counted the same requests.
        var nbdWriteLatencies = await prometheus.ValueAsync($"sum(ostor_nbd_duration_seconds_count{{export=\"{Volume}\",command=\"write\"}})");
        Assert.True(nbdWriteLatencies >= writes, $"the NBD write latency histogram counted {nbdWriteLatencies} of {writes}");
    }

    private async Task MismatchesSurviveFailoverAsync(ScriptedCluster cluster, OstorClient admin, PrometheusApi prometheus, Eventually eventually)
    {
        var map = await admin.GetMapAsync();
        var volume = map.FindVolume(Volume)!;
        var primary = volume.PlacementGroupOf(0).Primary;
        var mismatches = $"sum(ostor_epoch_mismatches_total{{reporting_host=\"{primary}\"}})";
        var before = await prometheus.ValueAsync(mismatches);

        // A request at an epoch the cluster has left behind: refused, and reported to management.
        var stale = await Assert.ThrowsAsync<StaleEpochException>(() => admin.Cluster.GetGrain<IStorageServerGrain>(primary)
            .ReadAsync(new SegmentRead(map.Epoch - 1, new SegmentAddress(volume.VolumeId, 0), 0, 4096)));
        output.WriteLine("refused: " + stale.Message);
        var counted = 0.0;
        await eventually.UntilAsync(async () => (counted = await prometheus.ValueAsync(mismatches)) >= before + 1,
            $"the stale request to {primary} in ostor_epoch_mismatches_total", TimeSpan.FromSeconds(30), () => $"{counted}, was {before}");

        // kill -9 the host the management service runs on: another host takes it over, from the
        // counts it persisted.
        var active = (await prometheus.QueryAsync("ostor_management_active == 1")).Single();
        var managementHost = active.Labels["host"];
        var instance = active.Labels["instance"];
        output.WriteLine($"management runs on {managementHost} ({instance}); {counted} mismatches from {primary}; killing it");
        using (var process = Process.GetProcessById(cluster.PidOf(int.Parse(managementHost["host-".Length..], CultureInfo.InvariantCulture))!.Value))
        {
            process.Kill();
        }
        PrometheusApi.Sample? moved = null;
        await eventually.UntilAsync(async () =>
        {
            moved = (await prometheus.QueryAsync("ostor_management_active == 1")).SingleOrDefault(s => s.Labels["instance"] != instance);
            return moved is not null;
        }, "the management service on another host", TimeSpan.FromSeconds(90));
        var after = 0.0;
        await eventually.UntilAsync(async () =>
            (after = await prometheus.ValueAsync($"sum(ostor_epoch_mismatches_total{{reporting_host=\"{primary}\",instance=\"{moved!.Labels["instance"]}\"}})")) >= counted,
            $"{moved!.Labels["host"]} exports at least the {counted} mismatches from {primary}", TimeSpan.FromSeconds(30), () => $"it exports {after}");
        output.WriteLine($"after the failover {moved.Labels["host"]} exports {after} mismatches from {primary} (before the kill: {counted})");
    }

    private static void AssertWithinOnePercent(long expected, double actual, string what) =>
        Assert.True(Math.Abs(actual - expected) <= expected * 0.01, $"{what}: prometheus counted {actual}, fio reports {expected} (more than 1 % apart)");

    private static Process StartNbdServer(ScriptedCluster cluster, int port, int metricsPort)
    {
        var start = new ProcessStartInfo(Path.Combine(ScriptedCluster.RepositoryRoot, "infra", "ostor")) { UseShellExecute = false };
        foreach (var argument in new[] { "nbd", "serve", "--listen", $"127.0.0.1:{port}", "--tls", "off", "--metrics", $"127.0.0.1:{metricsPort}" })
        {
            start.ArgumentList.Add(argument);
        }
        foreach (var (name, value) in cluster.Variables)
        {
            start.Environment[name] = value;
        }
        return Process.Start(start)!;
    }

}
