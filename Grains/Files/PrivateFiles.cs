using System.Runtime.InteropServices;

namespace OrleansStorage.Files;

/// <summary>
/// A host's files are its owner's alone: segment files are volume data, and the saved map, the
/// superblock and the logs name volumes, clients and grants (docs/security.md, "Files on disk").
/// The silo process creates everything without group or other bits, whatever umask it was
/// started with; a data directory is kept at 0700, which alone shuts every other local user out
/// of everything under it.
/// </summary>
public static partial class PrivateFiles
{
    public const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>The bits that let anyone but the owner in.</summary>
    public const UnixFileMode OthersBits =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>Every file and directory this process creates from now on is its owner's alone (umask 077).</summary>
    public static void RestrictProcess()
    {
        if (OperatingSystem.IsLinux())
        {
            _ = Libc.Umask(0b000_111_111);
        }
    }

    /// <summary>The bits of <paramref name="directory"/>'s mode that let others in (none: 0).</summary>
    public static UnixFileMode OpenToOthers(string directory) =>
        OperatingSystem.IsLinux() ? File.GetUnixFileMode(directory) & OthersBits : 0;

    /// <summary>
    /// Takes the group and other bits off <paramref name="root"/> and everything under it (symbolic
    /// links are left alone, and not followed): what a version that did not keep files private left.
    /// </summary>
    public static void Tighten(string root)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        var everything = new DirectoryInfo(root).EnumerateFileSystemInfos("*", new EnumerationOptions
        {
            RecurseSubdirectories = true,
            AttributesToSkip = FileAttributes.ReparsePoint,
            IgnoreInaccessible = false,
        });
        foreach (var entry in everything.Prepend(new DirectoryInfo(root)))
        {
            if ((entry.UnixFileMode & OthersBits) != 0)
            {
                entry.UnixFileMode &= ~OthersBits;
            }
        }
    }

    /// <summary>The mode of <paramref name="path"/> in octal, as chmod takes it: 0755.</summary>
    public static string ModeOf(string path) =>
        OperatingSystem.IsLinux() ? "0" + Convert.ToString((int)File.GetUnixFileMode(path), 8) : "unknown";
}
