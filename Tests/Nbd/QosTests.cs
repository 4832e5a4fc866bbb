using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static OrleansStorage.Tests.Nbd.NbdClientTools;

namespace OrleansStorage.Tests.Nbd;

/// <summary>
/// Volume QoS measured by fio through our NBD export: a limited volume runs at its limit, within
/// 10 % (the limit is what the issue asks to measure, so this one test compares rates), and a
/// volume on the same hosts without limits is not held back.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class QosTests(StorageClusterFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
    private const long ReadIopsLimit = 200;
    private const long WriteBytesLimit = 1 << 20;
    private readonly string _limited = "qos-" + Guid.NewGuid().ToString("N")[..10];
    private readonly string _free = "free-" + Guid.NewGuid().ToString("N")[..10];
    private NbdServer? _server;

    public async Task InitializeAsync()
    {
        if (!fixture.Available)
        {
            return;
        }
        await fixture.Client.CreateVolumeAsync(_limited, 64L << 20, 2);
        await fixture.Client.SetVolumeQosAsync(_limited, new VolumeQos(ReadIopsLimit, 0, 0, WriteBytesLimit));
        await fixture.Client.CreateVolumeAsync(_free, 64L << 20, 2);
        _server = new NbdServer(fixture.Client, new NbdServerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) }, NullLogger.Instance);
        _server.Start();
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
            await fixture.Client.DeleteVolumeAsync(_limited);
            await fixture.Client.DeleteVolumeAsync(_free);
        }
    }

    [SkippableFact]
    public async Task A_limited_volume_runs_at_its_limit_and_a_volume_beside_it_does_not()
    {
        Require("fio", "fio");
        fixture.SkipIfUnavailable();
        // The ramp spends the second's worth of burst before fio starts counting.
        var limitedReads = await FioAsync(_limited, "randread", "4k");
        var freeReads = await FioAsync(_free, "randread", "4k");
        // 256 writes of 4 KiB a second, with a queue deep enough that no host's share idles (each
        // host holds only its share of the limit, and idle time is not saved beyond the burst).
        var limitedWrites = await FioAsync(_limited, "randwrite", "4k", queueDepth: 32);
        output.WriteLine($"limited reads {limitedReads.Iops:0} IOPS (limit {ReadIopsLimit}), unlimited volume {freeReads.Iops:0} IOPS; limited writes {limitedWrites.BytesPerSecond / 1024:0} KiB/s (limit {WriteBytesLimit / 1024})");
        Assert.InRange(limitedReads.Iops, ReadIopsLimit * 0.9, ReadIopsLimit * 1.1);
        Assert.True(freeReads.Iops > 2 * ReadIopsLimit, $"the unlimited volume ran at {freeReads.Iops:0} IOPS");
        Assert.InRange(limitedWrites.BytesPerSecond, WriteBytesLimit * 0.9, WriteBytesLimit * 1.1);
    }

    private async Task<(double Iops, double BytesPerSecond)> FioAsync(string volume, string rw, string blockSize, int queueDepth = 8)
    {
        var result = await ExternalProgram.RunAsync("fio", ["--name=qos", "--ioengine=nbd", $"--uri=nbd://127.0.0.1:{_server!.LocalEndpoint.Port}/{volume}",
            $"--rw={rw}", $"--bs={blockSize}", $"--iodepth={queueDepth}", "--size=64M", "--time_based", "--runtime=10", "--ramp_time=2", "--output-format=json"]);
        var json = result.Stdout[result.Stdout.IndexOf('{', StringComparison.Ordinal)..];
        var side = JsonDocument.Parse(json).RootElement.GetProperty("jobs")[0].GetProperty(rw.Contains("write", StringComparison.Ordinal) ? "write" : "read");
        return (side.GetProperty("iops").GetDouble(), side.GetProperty("bw_bytes").GetDouble());
    }
}
