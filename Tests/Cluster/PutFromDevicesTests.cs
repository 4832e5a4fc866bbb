using System.Diagnostics;
using OrleansStorage.Client.Cli;
using OrleansStorage.Errors;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// <c>ostor put</c> from what is not a regular file: a block device copies its real size, a
/// character device or a pipe is read to its end or to --length, and a copy that moved fewer
/// bytes than asked fails rather than reporting success.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class PutFromDevicesTests(StorageClusterFixture fixture) : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("ostor-put-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [SkippableFact]
    public async Task A_loop_device_copies_its_real_size()
    {
        fixture.SkipIfUnavailable();
        Prerequisites.Require(Environment.UserName == "root", "attaching a loop device needs root");
        var image = Path.Combine(_root, "disk.img");
        var data = Random.Shared.GetItems<byte>(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), 3 << 20);
        await File.WriteAllBytesAsync(image, data);
        var device = (await ExternalProgram.RunAsync("losetup", ["--find", "--show", image])).Stdout.Trim();
        try
        {
            var volume = await NewVolumeAsync("put-loop", 8 << 20);
            using var source = TransferSource.Open(device);
            Assert.True(source.IsBlockDevice);
            Assert.Equal(data.Length, source.Length);
            Assert.Equal(data.Length, await VolumeTransfer.PutAsync(volume, source, 0, null, null, CancellationToken.None));
            var back = new byte[data.Length];
            await volume.ReadAsync(0, back);
            Assert.Equal(data, back);
        }
        finally
        {
            await ExternalProgram.RunAsync("losetup", ["--detach", device]);
        }
    }

    [SkippableFact]
    public async Task A_character_device_or_pipe_is_read_to_length_or_end_and_a_short_copy_fails()
    {
        fixture.SkipIfUnavailable();
        var volume = await NewVolumeAsync("put-stream", 4 << 20);
        await volume.WriteAsync(0, Enumerable.Repeat((byte)0xAB, 4 << 20).ToArray());

        // /dev/zero with --length: exactly that many zeros, the rest untouched.
        using (var zero = TransferSource.Open("/dev/zero"))
        {
            Assert.Null(zero.Length);
            Assert.Equal(1 << 20, await VolumeTransfer.PutAsync(volume, zero, 4096, 1 << 20, null, CancellationToken.None));
        }
        var back = new byte[4 << 20];
        await volume.ReadAsync(0, back);
        Assert.All(back[..4096], b => Assert.Equal(0xAB, b));
        Assert.All(back[4096..(4096 + (1 << 20))], b => Assert.Equal(0, b));
        Assert.All(back[(4096 + (1 << 20))..], b => Assert.Equal(0xAB, b));

        // /dev/zero without --length never ends: the volume fills, and that is an error, not success.
        using (var endless = TransferSource.Open("/dev/zero"))
        {
            var error = await Assert.ThrowsAsync<InvalidRequestException>(() => VolumeTransfer.PutAsync(volume, endless, 0, null, null, CancellationToken.None));
            Assert.Contains("holds more than the 4194304 bytes", error.Message, StringComparison.Ordinal);
        }

        // A pipe (a FIFO another process writes 1.5 MiB into): read to its end...
        var payload = Random.Shared.GetItems<byte>(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), 3 << 19);
        Assert.Equal(payload.Length, await PutFromFifoAsync(volume, payload, length: null));
        await volume.ReadAsync(0, back.AsMemory(0, payload.Length));
        Assert.Equal(payload, back[..payload.Length]);

        // ...and when it ends before --length, the copy fails and says how much it moved.
        var shortCopy = await Assert.ThrowsAsync<IOException>(() => PutFromFifoAsync(volume, payload, length: 2 << 20));
        Assert.Contains($"ended after {payload.Length} of the {2 << 20} bytes asked for", shortCopy.Message, StringComparison.Ordinal);

        // A length the volume cannot hold changes nothing.
        using var zeros = TransferSource.Open("/dev/zero");
        await Assert.ThrowsAsync<InvalidRequestException>(() => VolumeTransfer.PutAsync(volume, zeros, 0, 5 << 20, null, CancellationToken.None));
    }

    private async Task<long> PutFromFifoAsync(Client.Library.VolumeHandle volume, byte[] payload, long? length)
    {
        var fifo = Path.Combine(_root, "fifo-" + Guid.NewGuid().ToString("N")[..6]);
        await ExternalProgram.RunAsync("mkfifo", [fifo]);
        var input = Path.Combine(_root, "payload");
        await File.WriteAllBytesAsync(input, payload);
        // The writer: a separate process, as a shell pipeline's would be.
        using var writer = Process.Start(new ProcessStartInfo("sh", ["-c", $"cat '{input}' > '{fifo}'"]) { UseShellExecute = false })!;
        using var source = TransferSource.Open(fifo);
        Assert.Null(source.Length);
        try
        {
            return await VolumeTransfer.PutAsync(volume, source, 0, length, null, CancellationToken.None);
        }
        finally
        {
            await writer.WaitForExitAsync();
        }
    }

    private async Task<Client.Library.VolumeHandle> NewVolumeAsync(string name, long size)
    {
        await fixture.Client.CreateVolumeAsync(name, size, 2);
        return await fixture.Client.OpenVolumeAsync(name);
    }
}
