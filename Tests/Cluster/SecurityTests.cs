using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Security;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// The local cluster as <c>infra/cluster up</c> makes it, tried as another local user and as a
/// holder of the wrong certificates would (docs/security.md): PostgreSQL takes no one without
/// its password and has no socket; the gateways take only this cluster's certificates, the silo
/// ports only its host certificates; the keys and passwords are readable by their owner alone.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SecurityTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Without_the_clusters_certificates_and_passwords_nobody_reaches_postgres_a_gateway_or_a_silo_port()
    {
        Prerequisites.Require(Environment.UserName == "root", "runs commands as the unprivileged user 'nobody', which needs root");
        var postgres = PrivatePostgres.FindBinDirectory();
        Prerequisites.Require(postgres is not null, "PostgreSQL is not installed");
        await using var cluster = new ScriptedCluster(output.WriteLine, hosts: 2, netns: false);
        await cluster.UpAsync();
        var port = File.ReadAllText(Path.Combine(cluster.Data, "secrets", "pgpass")).Split(':')[1];

        // PostgreSQL: no socket to find, and over TCP neither the superuser nor the cluster's role without a password.
        Assert.False(File.Exists($"/tmp/.s.PGSQL.{port}"), "PostgreSQL has a socket in /tmp");
        foreach (var (user, database) in new[] { ("postgres", "postgres"), ("ostor", "ostor") })
        {
            var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => AsNobodyAsync(Path.Combine(postgres!, "psql"), "-w", "-h", "127.0.0.1", "-p", port, "-U", user, "-d", database, "-c", "SELECT 1"));
            output.WriteLine(refused.Message);
            Assert.Contains("password", refused.Message, StringComparison.Ordinal);
        }

        // The keys and the passwords are their owner's alone.
        foreach (var secret in new[] { Path.Combine(cluster.Pki, "ca.key"), Path.Combine(cluster.Pki, "tickets.key"), Path.Combine(cluster.Pki, "clients", "admin.key"), Path.Combine(cluster.Pki, "hosts", "host-1.key"), Path.Combine(cluster.Data, "secrets", "ostor.password"), Path.Combine(cluster.Data, "secrets", "pgpass") })
        {
            var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => AsNobodyAsync("cat", secret));
            Assert.Contains("Permission denied", refused.Message, StringComparison.Ordinal);
        }

        // The administrator, with the certificates infra/cluster up made, works as before.
        await using (var admin = await OstorClient.ConnectAsync(Options(cluster.Gateways, cluster.Pki)))
        {
            await admin.CreateVolumeAsync("secret", 4 << 20, 2);
            Assert.NotNull((await admin.GetMapAsync()).FindVolume("secret"));
            var volume = await admin.OpenVolumeAsync("secret");
            await volume.WriteAsync(0, System.Text.Encoding.ASCII.GetBytes("a marker only the owner may read"), forceUnitAccess: true);
        }

        // What a host keeps (segments, superblock, map) and its log: the owner's alone. Every entry
        // the silo processes made has no group or other bits, whatever umask they were started with,
        // and 'nobody' can open none of them.
        var hostEntries = Enumerable.Range(1, 2).SelectMany(h => new DirectoryInfo(Path.Combine(cluster.Data, $"host-{h}"))
            .EnumerateFileSystemInfos("*", SearchOption.AllDirectories).Prepend(new DirectoryInfo(Path.Combine(cluster.Data, $"host-{h}")))).ToList();
        Assert.Contains(hostEntries, e => e.Name.EndsWith(".seg", StringComparison.Ordinal));
        Assert.Empty(hostEntries.Where(e => (e.UnixFileMode & Files.PrivateFiles.OthersBits) != 0).Select(e => $"{e.FullName} {e.UnixFileMode}"));
        var readable = hostEntries.OfType<FileInfo>().Select(f => f.FullName).Concat(Enumerable.Range(1, 2).Select(h => Path.Combine(cluster.Data, "logs", $"host-{h}.log"))).ToList();
        var probe = await AsNobodyAsync("sh", ["-c", "for f; do if head -c 1 \"$f\" >/dev/null 2>&1; then echo \"read $f\"; fi; done", "probe", .. readable]);
        Assert.Equal("", probe.Stdout.Trim());
        output.WriteLine($"'nobody' opened none of {readable.Count} files of the hosts and their logs");

        // Plain text, what any local user can send: refused at the handshake.
        var plain = await Assert.ThrowsAsync<StorageException>(() => OstorClient.ConnectAsync(Options(cluster.Gateways, pki: "")));
        output.WriteLine(plain.Message);
        Assert.Contains("give the cluster's certificates", plain.Message, StringComparison.Ordinal);

        // A client certificate of another authority: refused, and the gateway says why in its log.
        var stranger = new PkiDirectory(Path.Combine(cluster.Data, "stranger-pki"));
        stranger.CreateAuthority("stranger", DateTimeOffset.UtcNow).Dispose();
        stranger.IssueClient("admin", DateTimeOffset.UtcNow).Dispose();
        await RefusedAndLoggedAsync(cluster, Options(cluster.Gateways, stranger.Path),
            "refused a TLS connection on the gateway port: certificate 'CN=admin, OU=ostor-client, O=OrleansStorage' is not one of this cluster's");

        // This cluster's client certificate on a silo port, where only hosts may talk: refused.
        await RefusedAndLoggedAsync(cluster, Options([$"127.0.0.1:{cluster.SiloPortOf(1)}"], cluster.Pki),
            "refused a TLS connection on the silo port: certificate 'CN=admin, OU=ostor-client, O=OrleansStorage' is a client certificate; this connection takes host certificates");
    }

    private static OstorClientOptions Options(IEnumerable<string> gateways, string pki)
    {
        var options = new OstorClientOptions { PkiDirectory = pki, SubscribeToMapChanges = false, ConnectTimeout = TimeSpan.FromSeconds(5) };
        options.Gateways.Clear();
        foreach (var gateway in gateways)
        {
            options.Gateways.Add(gateway);
        }
        return options;
    }

    /// <summary>
    /// A client with <paramref name="options"/> is refused, and a host's log says why. The client
    /// tries again until the line is there: a client that judges the host's certificate first may
    /// hang up before the host has seen its own, and the host logs refusals at most every 10 s.
    /// </summary>
    private Task RefusedAndLoggedAsync(ScriptedCluster cluster, OstorClientOptions options, string line) =>
        new Eventually(output).UntilAsync(async () =>
        {
            var refused = await Assert.ThrowsAsync<StorageException>(() => OstorClient.ConnectAsync(options));
            output.WriteLine("refused: " + refused.Message);
            return string.Concat(Directory.GetFiles(Path.Combine(cluster.Data, "logs"), "host-*.log").Select(File.ReadAllText)).Contains(line, StringComparison.Ordinal);
        }, $"a host logged \"{line}\"", TimeSpan.FromSeconds(45));

    private static Task<ExternalProgram.Output> AsNobodyAsync(string program, params string[] arguments) =>
        ExternalProgram.RunAsync("runuser", ["-u", "nobody", "--", program, .. arguments], TimeSpan.FromSeconds(30));
}
