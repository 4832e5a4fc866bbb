using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Tests.Infrastructure;
using static OrleansStorage.Tests.Nbd.NbdClientTools;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Nbd;

/// <summary>
/// Snapshots through real NBD clients: <c>VOL@SNAP</c> exports read-only the volume as it was,
/// qemu-img compares it with a copy taken at that moment, nbdinfo maps its allocation, and a
/// rollback makes the volume compare equal again.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class NbdSnapshotTests(StorageClusterFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
    private const long VolumeSize = 32L << 20;
    private readonly string _volume = "nbdsnap-" + Guid.NewGuid().ToString("N")[..10];
    private readonly string _scratch = Path.Combine(Path.GetTempPath(), "ostor-nbdsnap-" + Guid.NewGuid().ToString("N")[..8]);
    private NbdServer? _server;

    private string Uri(string export) => $"nbd://127.0.0.1:{_server!.LocalEndpoint.Port}/{export}";

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_scratch);
        if (!fixture.Available)
        {
            return;
        }
        await fixture.Client.CreateVolumeAsync(_volume, VolumeSize, 2);
        _server = new NbdServer(fixture.Client, new NbdServerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) }, NullLogger.Instance);
        _server.Start();
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
            await fixture.Client.DeleteVolumeAsync(_volume, withSnapshots: true);
        }
        Directory.Delete(_scratch, recursive: true);
    }

    [SkippableFact]
    public async Task A_snapshot_export_compares_equal_to_a_copy_taken_then_refuses_writes_and_rollback_restores_it()
    {
        fixture.SkipIfUnavailable();
        Require("qemu-img", "qemu-utils");
        Require("qemu-io", "qemu-utils");
        Require("nbdinfo", "libnbd-bin");
        // 8 MiB of data at 4 MiB, the rest never written.
        await RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x11 4M 8M", "-c", "flush", Uri(_volume));
        var atSnapshot = Path.Combine(_scratch, "at-snapshot.raw");
        await RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", Uri(_volume), atSnapshot);
        await fixture.Client.CreateSnapshotAsync(_volume, "before");

        // Changed after it: data overwritten, a hole written, data discarded.
        await RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x22 6M 1M", "-c", "write -P 0x33 20M 2M", "-c", "discard 10M 1M", "-c", "flush", Uri(_volume));
        var snapshot = Uri($"{_volume}@before");
        await RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", atSnapshot, snapshot);
        var changed = await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", atSnapshot, Uri(_volume)));
        Assert.Contains("exited 1", changed.Message, StringComparison.Ordinal); // 1: the images differ

        // Read-only, whatever the client tries.
        var info = JsonDocument.Parse(await RunAsync("nbdinfo", "--json", snapshot)).RootElement.GetProperty("exports")[0];
        Assert.True(info.GetProperty("is_read_only").GetBoolean());
        Assert.False(info.GetProperty("can_trim").GetBoolean()); // nor offers what it would refuse
        Assert.False(info.GetProperty("can_zero").GetBoolean());
        Assert.Equal(VolumeSize, info.GetProperty("export-size").GetInt64());
        var open = await OutcomeAsync("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 64k", snapshot);
        Assert.Contains("Permission denied", open, StringComparison.Ordinal); // qemu will not even open it for writing
        // A client that writes anyway gets EPERM for each write and trim, and the snapshot is unchanged.
        await using (var raw = await NbdTestClient.ConnectAsync(_server!.LocalEndpoint))
        {
            await raw.GoAsync($"{_volume}@before");
            await raw.SendRequestAsync(1 /* write */, 1, 0, 4096, payload: new byte[4096]);
            Assert.Equal(1u /* EPERM */, (await raw.ReadReplyAsync()).Error);
            await raw.SendRequestAsync(4 /* trim */, 2, 4L << 20, 4096);
            Assert.Equal(1u, (await raw.ReadReplyAsync()).Error);
        }
        await RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", atSnapshot, snapshot);

        // Its allocation is the snapshot's: data at 4-12 MiB, a hole everywhere else (not the 20 MiB written after).
        var map = await RunAsync("nbdinfo", "--map", snapshot);
        var extents = map.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(parts => (Offset: long.Parse(parts[0]), Length: long.Parse(parts[1]), Type: int.Parse(parts[2])))
            .ToList();
        Assert.Contains((4L << 20, 8L << 20, 0), extents);
        Assert.DoesNotContain(extents, e => e.Type == 0 && e.Offset < (24L << 20) && e.Offset + e.Length > (20L << 20));

        await fixture.Client.RollbackAsync(_volume, "before");
        await RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", atSnapshot, Uri(_volume));
    }

    [SkippableFact]
    public async Task A_clone_written_through_nbd_leaves_its_parent_and_snapshot_unchanged()
    {
        fixture.SkipIfUnavailable();
        Require("qemu-img", "qemu-utils");
        Require("qemu-io", "qemu-utils");
        Require("nbdinfo", "libnbd-bin");
        await RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x55 0 6M", "-c", "flush", Uri(_volume));
        await fixture.Client.CreateSnapshotAsync(_volume, "base");
        var clone = _volume + "-clone";
        await fixture.Client.CloneVolumeAsync($"{_volume}@base", clone, 1);
        try
        {
            var volumeBefore = Path.Combine(_scratch, "volume.raw");
            await RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", Uri(_volume), volumeBefore);
            await RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", volumeBefore, Uri(clone)); // a fresh clone reads as its snapshot

            await RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x66 2M 64k", "-c", "write -P 0x77 16M 1M", "-c", "discard 4M 1M", "-c", "flush", Uri(clone));
            var check = await RunAsync("qemu-io", "-f", "raw",
                "-c", "read -P 0x55 0 2M", "-c", "read -P 0x66 2M 64k", "-c", "read -P 0x55 2112k 1984k", "-c", "read -P 0 4M 1M",
                "-c", "read -P 0x55 5M 1M", "-c", "read -P 0x77 16M 1M", Uri(clone));
            Assert.DoesNotContain("Pattern verification failed", check, StringComparison.Ordinal);
            await RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", volumeBefore, Uri(_volume));
            await RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", volumeBefore, Uri($"{_volume}@base"));

            // The clone's allocation: the parent's data it reads through to, its own writes, the hole it punched.
            var map = await RunAsync("nbdinfo", "--map", Uri(clone));
            var data = map.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(parts => parts[2] == "0")
                .Select(parts => (long.Parse(parts[0]), long.Parse(parts[1])))
                .ToList();
            Assert.Equal([(0L, 4L << 20), (5L << 20, 1L << 20), (16L << 20, 1L << 20)], data);
        }
        finally
        {
            await fixture.Client.DeleteVolumeAsync(clone);
            await fixture.Client.DeleteSnapshotAsync(_volume, "base");
        }
    }

    [SkippableFact]
    public async Task Rollback_is_refused_while_an_nbd_client_has_the_volume_open_for_writing_unless_forced()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateSnapshotAsync(_volume, "r"); // of a volume never written: all zeros
        var volume = await fixture.Client.OpenVolumeAsync(_volume);
        var firstBlock = new byte[4096];
        await using (var writer = await NbdTestClient.ConnectAsync(_server!.LocalEndpoint))
        {
            await writer.GoAsync(_volume);
            await writer.SendRequestAsync(1 /* write */, 1, 0, 4096, payload: Enumerable.Repeat((byte)0x5a, 4096).ToArray());
            Assert.Equal(0u, (await writer.ReadReplyAsync()).Error);
            await new Eventually(output).UntilAsync(
                async () => (await fixture.Client.GetWritersAsync(_volume)).Length == 1, "the NBD connection registered as a writer");
            var refused = await Assert.ThrowsAsync<Errors.InvalidRequestException>(() => fixture.Client.RollbackAsync(_volume, "r"));
            Assert.Contains($"volume '{_volume}' is open for writing by NBD client 127.0.0.1:", refused.Message, StringComparison.Ordinal);
            // Refused means untouched: the write made after the snapshot is still there.
            await volume.ReadAsync(0, firstBlock);
            Assert.All(firstBlock, b => Assert.Equal(0x5a, b));

            await fixture.Client.RollbackAsync(_volume, "r", force: true);
            await volume.ReadAsync(0, firstBlock);
            Assert.All(firstBlock, b => Assert.Equal(0, b));

            // A read-only connection (the snapshot) is no writer.
            await using var reader = await NbdTestClient.ConnectAsync(_server!.LocalEndpoint);
            await reader.GoAsync($"{_volume}@r");
            Assert.Single(await fixture.Client.GetWritersAsync(_volume));
        }
        await new Eventually(output).UntilAsync(
            async () => (await fixture.Client.GetWritersAsync(_volume)).Length == 0, "the writer gone with its connection");
        await fixture.Client.RollbackAsync(_volume, "r");
        await fixture.Client.DeleteSnapshotAsync(_volume, "r");
    }

    private async Task<string> RunAsync(string program, params string[] arguments) =>
        (await ExternalProgram.RunAsync(program, arguments)).All;

    /// <summary>What the program printed, whether it succeeded or not.</summary>
    private async Task<string> OutcomeAsync(string program, params string[] arguments)
    {
        try
        {
            return await RunAsync(program, arguments);
        }
        catch (InvalidOperationException failed)
        {
            return failed.Message;
        }
    }
}
