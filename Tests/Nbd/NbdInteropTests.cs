using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Tests.Infrastructure;
using static OrleansStorage.Tests.Nbd.NbdClientTools;
using Xunit;

namespace OrleansStorage.Tests.Nbd;

/// <summary>
/// Real NBD clients (Debian's qemu-utils, libnbd-bin, fio; .ci/run installs them) against our
/// export of a real cluster. A missing tool skips its test with a message naming the package.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class NbdInteropTests(StorageClusterFixture fixture) : IAsyncLifetime
{
    private readonly string _volume = "interop-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _scratch = Path.Combine(Path.GetTempPath(), "ostor-interop-" + Guid.NewGuid().ToString("N")[..8]);
    private NbdServer? _server;

    private string Uri => $"nbd://127.0.0.1:{_server!.LocalEndpoint.Port}/{_volume}";

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_scratch);
        if (!fixture.Available)
        {
            return;
        }
        await fixture.Client.CreateVolumeAsync(_volume, 64L << 20, 2);
        _server = new NbdServer(fixture.Client, new NbdServerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) }, NullLogger.Instance);
        _server.Start();
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
        Directory.Delete(_scratch, recursive: true);
    }

    [SkippableFact]
    public async Task Qemu_img_converts_a_random_image_in_and_back_out_unchanged()
    {
        Require("qemu-img", "qemu-utils");
        var image = Path.Combine(_scratch, "in.raw");
        await WriteRandomImageAsync(image, dataBytes: 20 << 20, totalBytes: 64 << 20);
        await RunAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", image, Uri);
        var back = Path.Combine(_scratch, "out.raw");
        await RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", Uri, back);
        Assert.Equal(Sha256(image), Sha256(back));

        // qemu-img map sees the thin provisioning: the never-written tail is a zero hole.
        var map = JsonDocument.Parse(await RunAsync("qemu-img", "map", "--output=json", Uri)).RootElement.EnumerateArray().ToList();
        Assert.Contains(map, e => e.GetProperty("data").GetBoolean() && e.GetProperty("start").GetInt64() == 0);
        Assert.Contains(map, e => !e.GetProperty("data").GetBoolean() && e.GetProperty("zero").GetBoolean()
            && e.GetProperty("start").GetInt64() + e.GetProperty("length").GetInt64() == 64L << 20);
    }

    [SkippableFact]
    public async Task Qemu_io_writes_and_reads_back_patterns()
    {
        Require("qemu-io", "qemu-utils");
        var output = await RunAsync("qemu-io", "-f", "raw",
            "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 3M 128k", "-c", "write -z 5M 64k",
            "-c", "read -P 0x5a 0 1M", "-c", "read -P 0xa5 3M 128k", "-c", "read -P 0 5M 64k", "-c", "read -P 0 10M 1M",
            "-c", "flush", Uri);
        Assert.DoesNotContain("Pattern verification failed", output, StringComparison.Ordinal);
        Assert.DoesNotContain("error", output, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(4, output.Split("read ").Length - 1);
    }

    [SkippableFact]
    public async Task Nbdinfo_shows_the_export_its_size_and_flags()
    {
        Require("nbdinfo", "libnbd-bin");
        var info = JsonDocument.Parse(await RunAsync("nbdinfo", "--json", Uri)).RootElement;
        var export = info.GetProperty("exports")[0];
        Assert.Equal(_volume, export.GetProperty("export-name").GetString());
        Assert.Equal(64L << 20, export.GetProperty("export-size").GetInt64());
        Assert.True(export.GetProperty("can_flush").GetBoolean());
        Assert.True(export.GetProperty("can_fua").GetBoolean());
        Assert.True(export.GetProperty("can_trim").GetBoolean());
        Assert.True(export.GetProperty("can_zero").GetBoolean());
        Assert.True(export.GetProperty("can_multi_conn").GetBoolean());
        Assert.False(export.GetProperty("is_read_only").GetBoolean());
        Assert.Contains(export.GetProperty("contexts").EnumerateArray(), c => c.GetString() == "base:allocation");
    }

    [SkippableFact]
    public async Task Nbdcopy_round_trips_through_the_export()
    {
        Require("nbdcopy", "libnbd-bin");
        var image = Path.Combine(_scratch, "copy-in.raw");
        await WriteRandomImageAsync(image, dataBytes: 16 << 20, totalBytes: 64 << 20);
        await RunAsync("nbdcopy", image, Uri);
        var back = Path.Combine(_scratch, "copy-out.raw");
        await RunAsync("nbdcopy", Uri, back);
        Assert.Equal(Sha256(image), Sha256(back));
    }

    [SkippableFact]
    public async Task Fio_random_writes_verify_with_crc32c_at_queue_depth_32()
    {
        Require("fio", "fio");
        var output = await RunAsync("fio", "--name=verify", "--ioengine=nbd", $"--uri={Uri}", "--rw=randwrite", "--bs=4k",
            "--iodepth=32", "--size=16M", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--output-format=json");
        var json = JsonDocument.Parse(output[output.IndexOf('{', StringComparison.Ordinal)..]).RootElement;
        var job = json.GetProperty("jobs")[0];
        Assert.Equal(0, job.GetProperty("error").GetInt32());
        Assert.True(job.GetProperty("write").GetProperty("io_bytes").GetInt64() >= 16 << 20);
        Assert.True(job.GetProperty("read").GetProperty("io_bytes").GetInt64() >= 16 << 20, "fio should have read everything back to verify it");
    }


    private void SkipIfNoCluster() => fixture.SkipIfUnavailable();

    private async Task<string> RunAsync(string program, params string[] arguments)
    {
        SkipIfNoCluster();
        return (await ExternalProgram.RunAsync(program, arguments)).Stdout;
    }

    /// <summary>A raw image of <paramref name="totalBytes"/>: random data first, then a hole.</summary>
    private static async Task WriteRandomImageAsync(string path, int dataBytes, long totalBytes)
    {
        await using var file = File.Create(path);
        await file.WriteAsync(Replicas.RandomBytes(dataBytes, seed: dataBytes));
        file.SetLength(totalBytes);
    }
}
