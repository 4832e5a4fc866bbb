using OrleansStorage.Client.Cli;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// <c>ostor get</c> into a file: a copy that fails (here a full disk) leaves no partial file and
/// an existing file as it was; a device is written in place (issue 29, the smaller items).
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class GetIntoFilesTests(StorageClusterFixture fixture) : IAsyncLifetime
{
    private readonly string _root = Directory.CreateTempSubdirectory("ostor-get-").FullName;
    private bool _mounted;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_mounted)
        {
            await ExternalProgram.RunAsync("umount", [_root]);
        }
        Directory.Delete(_root, recursive: true);
    }

    [SkippableFact]
    public async Task A_get_onto_a_full_disk_fails_and_leaves_the_file_that_was_there_untouched_and_no_partial_one()
    {
        fixture.SkipIfUnavailable();
        Prerequisites.Require(Environment.UserName == "root", "mounting a small tmpfs needs root");
        await ExternalProgram.RunAsync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", _root]);
        _mounted = true;
        var path = Path.Combine(_root, "image.raw");
        await File.WriteAllTextAsync(path, "the copy from yesterday");
        await fixture.Client.CreateVolumeAsync("get-full-disk", 4 << 20, 1);
        var volume = await fixture.Client.OpenVolumeAsync("get-full-disk");
        await volume.WriteAsync(0, Replicas.RandomBytes(4 << 20, seed: 29));

        var full = await Assert.ThrowsAsync<IOException>(() => VolumeTransfer.GetAsync(volume, path, 0, null, null, CancellationToken.None));
        Assert.Contains("No space left on device", full.Message, StringComparison.Ordinal);
        Assert.Equal(["image.raw"], Directory.GetFileSystemEntries(_root).Select(Path.GetFileName));
        Assert.Equal("the copy from yesterday", await File.ReadAllTextAsync(path));

        // What fits is copied whole, over the old file.
        Assert.Equal(512 << 10, await VolumeTransfer.GetAsync(volume, path, 0, 512 << 10, null, CancellationToken.None));
        var expected = new byte[512 << 10];
        await volume.ReadAsync(0, expected);
        Assert.Equal(expected, await File.ReadAllBytesAsync(path));
        Assert.Equal(["image.raw"], Directory.GetFileSystemEntries(_root).Select(Path.GetFileName));

        // A new file, the common case, through a symbolic link to a device too.
        var fresh = Path.Combine(_root, "fresh.raw");
        Assert.Equal(256 << 10, await VolumeTransfer.GetAsync(volume, fresh, 0, 256 << 10, null, CancellationToken.None));
        Assert.Equal(expected.AsSpan(0, 256 << 10).ToArray(), await File.ReadAllBytesAsync(fresh));
        File.Delete(fresh);
        var link = Path.Combine(_root, "null-link");
        File.CreateSymbolicLink(link, "/dev/null");
        Assert.Equal(4 << 20, await VolumeTransfer.GetAsync(volume, link, 0, null, null, CancellationToken.None));
        Assert.Equal("/dev/null", new FileInfo(link).LinkTarget);
        File.Delete(link);

        // A device is written in place, not through a file beside it.
        Assert.Equal(4 << 20, await VolumeTransfer.GetAsync(volume, "/dev/null", 0, null, null, CancellationToken.None));
    }
}
