using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;
using OrleansStorage.Errors;
using OrleansStorage.Files;
using OrleansStorage.Identity;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// A host's data directory is its owner's alone (docs/security.md, "Files on disk"): made 0700
/// when it is new, tightened once when a version that did not keep it so left it open, and
/// refused at start, changing nothing, when someone opened it by hand afterwards.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PrivateDataDirectoryTests : IDisposable
{
    private static readonly Guid Cluster = Guid.Parse("8d7c5a2e-0f43-4c55-9b1a-2f7e6c3d4b10");
    private static readonly Serializer Serializer = new ServiceCollection().AddSerializer().BuildServiceProvider().GetRequiredService<Serializer>();
    private const UnixFileMode Open755 = PrivateFiles.DirectoryMode | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
    private const UnixFileMode Open644 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-private-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Fact]
    public void A_new_data_directory_is_its_owners_alone_even_if_it_was_made_open()
    {
        Directory.CreateDirectory(_root, Open755);
        using (var disk = new HostDisk(_root, "host-1", Serializer))
        {
            disk.Open();
            disk.Claim(Cluster);
            Assert.True(disk.Superblock!.FilesPrivate);
        }
        Assert.Equal(PrivateFiles.DirectoryMode, File.GetUnixFileMode(_root));
        Assert.True(Superblock.Parse("x", File.ReadAllBytes(Path.Combine(_root, Superblock.FileName))).FilesPrivate);
    }

    [Fact]
    public void A_directory_an_earlier_version_left_open_is_tightened_once_and_marked()
    {
        // What a version that did not keep files private left: 0755 folders, 0644 files, and a superblock without the mark.
        Directory.CreateDirectory(_root, Open755);
        var volume = Directory.CreateDirectory(Path.Combine(_root, HostDisk.VolumesFolderName, Guid.NewGuid().ToString()), Open755);
        File.SetUnixFileMode(Path.Combine(_root, HostDisk.VolumesFolderName), Open755);
        var segment = Path.Combine(volume.FullName, "0000000000.seg");
        File.WriteAllText(segment, "volume data");
        File.SetUnixFileMode(segment, Open644);
        var old = new Superblock(Superblock.CurrentFormat, Cluster, "host-1", DateTimeOffset.UtcNow);
        Assert.DoesNotContain("filesPrivate\": true", System.Text.Encoding.UTF8.GetString(old.ToBytes()), StringComparison.Ordinal);
        File.WriteAllBytes(Path.Combine(_root, Superblock.FileName), old.ToBytes());
        File.SetUnixFileMode(Path.Combine(_root, Superblock.FileName), Open644);

        using (var disk = new HostDisk(_root, "host-1", Serializer))
        {
            disk.Open();
            Assert.True(disk.Superblock!.FilesPrivate);
            Assert.Equal(old.ClusterId, disk.Superblock.ClusterId);
        }
        var open = new DirectoryInfo(_root).EnumerateFileSystemInfos("*", SearchOption.AllDirectories).Prepend(new DirectoryInfo(_root))
            .Where(e => (e.UnixFileMode & PrivateFiles.OthersBits) != 0).Select(e => e.FullName).ToList();
        Assert.Empty(open);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(segment));
        Assert.Equal("volume data", File.ReadAllText(segment));
        Assert.True(Superblock.Parse("x", File.ReadAllBytes(Path.Combine(_root, Superblock.FileName))).FilesPrivate);
    }

    [Fact]
    public void A_claimed_directory_opened_by_hand_is_refused_in_one_line_and_left_as_it_is()
    {
        using (var disk = new HostDisk(_root, "host-1", Serializer))
        {
            disk.Open();
            disk.Claim(Cluster);
        }
        File.SetUnixFileMode(_root, Open755);
        var superblock = File.ReadAllBytes(Path.Combine(_root, Superblock.FileName));

        using var reopened = new HostDisk(_root, "host-1", Serializer);
        var refused = Assert.Throws<HostStartupException>(reopened.Open);
        Assert.Equal($"data directory '{_root}' is open to other users (mode 0755): it holds volume data, and ostor keeps it 0700; run 'chmod -R go-rwx {_root}' and start again", refused.Message);
        Assert.False(reopened.IsOpen);
        Assert.Equal(Open755, File.GetUnixFileMode(_root));
        Assert.Equal(superblock, File.ReadAllBytes(Path.Combine(_root, Superblock.FileName)));

        // Once fixed as the line says, the host starts.
        File.SetUnixFileMode(_root, PrivateFiles.DirectoryMode);
        reopened.Open();
        Assert.True(reopened.IsOpen);
    }
}
