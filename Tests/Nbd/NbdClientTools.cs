using System.Security.Cryptography;
using OrleansStorage.Tests.Infrastructure;

namespace OrleansStorage.Tests.Nbd;

/// <summary>What the tests with real NBD clients share: the tool's presence and comparing images.</summary>
internal static class NbdClientTools
{
    /// <summary>A Debian tool a test drives; missing, it skips the test on a developer's machine and fails it in CI.</summary>
    public static void Require(string tool, string package) =>
        Prerequisites.Require(File.Exists($"/usr/bin/{tool}"), $"{tool} is not installed (Debian package {package}; .ci/run installs it)");

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }
}
