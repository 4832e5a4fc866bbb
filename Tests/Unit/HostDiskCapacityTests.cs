using OrleansStorage.Identity;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>A host offers the disk its data directory is on, not the machine's root filesystem.</summary>
public class HostDiskCapacityTests
{
    [SkippableFact]
    public async Task A_data_directory_on_a_filesystem_of_its_own_offers_that_filesystems_size()
    {
        Prerequisites.Require(Environment.UserName == "root", "mounting a tmpfs needs root");
        var mount = Path.Combine(Path.GetTempPath(), "ostor-capacity-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(mount);
        await ExternalProgram.RunAsync("mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", mount]);
        try
        {
            var data = Path.Combine(mount, "host-1");
            Directory.CreateDirectory(data);

            Assert.Equal(24L << 20, HostDisk.FilesystemSizeOf(data));
            Assert.NotEqual(24L << 20, HostDisk.FilesystemSizeOf(Path.GetTempPath()));
        }
        finally
        {
            await ExternalProgram.RunAsync("umount", [mount]);
            Directory.Delete(mount);
        }
    }
}
