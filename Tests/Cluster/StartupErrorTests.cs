using System.Diagnostics;
using Npgsql;
using OrleansStorage.Client.Cli;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// What a person meets when a start or a change cannot work: the ostor-silo program (a real
/// process) prints one line on standard error and exits non-zero within 30 s; the ostor command
/// line answers one line when PostgreSQL is gone, and the map stays as it was.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class StartupErrorTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-startup-" + Guid.NewGuid().ToString("N")[..8]);

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(_root);
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        Directory.Delete(_root, recursive: true);
        return Task.CompletedTask;
    }

    public static TheoryData<string, string> BadStarts => new()
    {
        { "malformed --postgres", "the PostgreSQL connection string (--postgres) is not valid" },
        { "unreachable --postgres", "did not answer" },
        { "--data is a file", "is a file, not a directory" },
        { "--data cannot be created", "cannot be created" },
        { "--data opened to other users", "is open to other users (mode 0755): it holds volume data, and ostor keeps it 0700; run 'chmod -R go-rwx " },
        { "a taken --silo-port", "is not free (AddressAlreadyInUse): another process, perhaps another cluster's silo, holds it" },
        { "a taken --gateway-port", "the gateway port 127.0.0.1:" },
        { "a network address without TLS", "is not a loopback address, and without TLS (--pki) every volume would be open to that network" },
        { "--pki without this host's certificate", "no host certificate for 'host-1'" },
        { "--pki without the hosts' ticket key", "no ticket key at" },
    };

    [Theory]
    [MemberData(nameof(BadStarts))]
    public async Task A_silo_that_cannot_start_says_why_in_one_line_and_exits_non_zero(string what, string expected)
    {
        var postgres = await PrivatePostgres.GetAsync() ?? throw new InvalidOperationException("PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        var connection = postgres.ConnectionString("postgres");
        var data = Path.Combine(_root, "data");
        var siloPort = Ports.Free();
        var gatewayPort = Ports.Free();
        string[] more = [];
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, what == "a taken --silo-port" ? siloPort : gatewayPort);
        switch (what)
        {
            case "malformed --postgres":
                connection = "Host=127.0.0.1;Port=notaport";
                break;
            case "unreachable --postgres":
                connection = $"Host=127.0.0.1;Port={Ports.Free()};Username=postgres;Database=ostor";
                break;
            case "--data is a file":
                await File.WriteAllTextAsync(data, "not a directory");
                break;
            case "--data cannot be created":
                await File.WriteAllTextAsync(Path.Combine(_root, "file"), "x");
                data = Path.Combine(_root, "file", "data");
                break;
            case "--data opened to other users":
                // A directory this version claimed, opened by hand afterwards.
                Directory.CreateDirectory(data);
                await File.WriteAllBytesAsync(Path.Combine(data, Identity.Superblock.FileName),
                    new Identity.Superblock(Identity.Superblock.CurrentFormat, Guid.NewGuid(), "host-1", DateTimeOffset.UtcNow, FilesPrivate: true).ToBytes());
                File.SetUnixFileMode(data, (UnixFileMode)0b111_101_101);
                break;
            case "a taken --silo-port" or "a taken --gateway-port":
                // Another process (here: this test) holds the port, as another cluster's silo would.
                holder.Start();
                break;
            case "a network address without TLS":
                more = ["--Cluster:AdvertisedAddress", "10.1.2.3"];
                break;
            case "--pki without this host's certificate":
                var pki = new Security.PkiDirectory(Path.Combine(_root, "pki"));
                pki.CreateAuthority("test", DateTimeOffset.UtcNow).Dispose();
                more = ["--pki", pki.Path];
                break;
            case "--pki without the hosts' ticket key":
                var hostsOnly = new Security.PkiDirectory(Path.Combine(_root, "pki"));
                hostsOnly.CreateAuthority("test", DateTimeOffset.UtcNow).Dispose();
                hostsOnly.IssueHost("host-1", [System.Net.IPAddress.Loopback], DateTimeOffset.UtcNow).Dispose();
                more = ["--pki", hostsOnly.Path];
                break;
        }
        var started = Stopwatch.StartNew();
        var (exitCode, stderr) = await RunSiloAsync(["--host-id", "host-1", "--data", data, "--postgres", connection,
            "--silo-port", siloPort.ToString(), "--gateway-port", gatewayPort.ToString(), .. more]);
        output.WriteLine($"{what}: exit {exitCode} after {started.Elapsed.TotalSeconds:0.0} s: {stderr}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("ostor-silo: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.NotEqual(0, exitCode);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(30), $"took {started.Elapsed}");
    }

    [Theory]
    [InlineData("--listen 0.0.0.0:10999 --tls off", "is not a loopback address, and without --tls require every exported volume would be open to that network")]
    [InlineData("--tls bogus", "--tls 'bogus' is not require, allow or off")]
    [InlineData("--tls require --pki PKI", "no server certificate for 'nbd' in")]
    [InlineData("--tls off --memory-budget 1MiB", "is below one connection's")]
    [InlineData("--tls off --payload-timeout 0", "--payload-timeout must be between 0 and 86400 seconds")]
    [InlineData("--tls-psk PKI/keys.psk", "no such file (make one with 'ostor pki psk NAME --file")]
    [InlineData("--tls off --tls-psk PKI/keys.psk", "--tls-psk with --tls off: give one or the other")]
    public async Task Nbd_serve_with_a_bad_option_says_so_in_one_line_before_reaching_any_cluster(string options, string expected)
    {
        var arguments = options.Replace("PKI", Path.Combine(_root, "no-pki"), StringComparison.Ordinal).Split(' ');
        await AssertOneLineWithoutAClusterAsync(["nbd", "serve", .. arguments], expected);
    }

    [Theory]
    [InlineData("--iops -1", "QoS: read IOPS limit -1 is outside 0 (none) to 10000000")]
    [InlineData("--read-bps 100", "QoS: read bytes/s limit 100 is below 4096 (0 means none)")]
    [InlineData("--bps lots", "is not a size")]
    [InlineData("", "give at least one of --iops, --bps")]
    [InlineData("--write-iops 1.5", "Cannot parse argument '1.5' for option '--write-iops' as a whole number")]
    public async Task Volume_set_qos_with_a_bad_value_says_so_in_one_line_before_reaching_any_cluster(string options, string expected) =>
        await AssertOneLineWithoutAClusterAsync(["volume", "set-qos", "v", .. options.Split(' ', StringSplitOptions.RemoveEmptyEntries)], expected);

    /// <summary>
    /// Issue 29: another user pointed at a certificates folder closed to it heard "no cluster
    /// authority"; now it hears that it may not read it, and what to do.
    /// </summary>
    [SkippableFact]
    public async Task A_certificates_folder_another_user_may_not_read_is_said_so_not_called_missing()
    {
        Prerequisites.Require(Environment.UserName == "root" && File.Exists("/usr/sbin/runuser"), "running as another user needs root and runuser");
        var closed = Path.Combine(_root, "closed-pki");
        var pki = new Security.PkiDirectory(closed);
        pki.CreateAuthority("closed", DateTimeOffset.UtcNow).Dispose();
        pki.IssueClient("admin", DateTimeOffset.UtcNow).Dispose();
        File.SetUnixFileMode(closed, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(_root, File.GetUnixFileMode(_root) | UnixFileMode.OtherExecute);

        var start = new ProcessStartInfo("runuser") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in new[] { "-u", "nobody", "--", "env", "HOME=/tmp", "DOTNET_CLI_HOME=/tmp", "dotnet", Path.Combine(AppContext.BaseDirectory, "ostor.dll"),
            "--gateway", $"127.0.0.1:{Ports.Free()}", "--pki", closed, "volume", "list" })
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        var lines = (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        output.WriteLine($"exit {process.ExitCode}: {string.Join('\n', lines)}");
        Assert.NotEqual(0, process.ExitCode);
        Assert.Single(lines);
        Assert.Contains($"cannot read {closed}/", lines[0], StringComparison.Ordinal);
        Assert.Contains("permission denied for user 'nobody'", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", lines[0], StringComparison.Ordinal);
    }

    /// <summary>The command fails with one line and a non-zero exit; no cluster answers at its gateway, so it must not need one.</summary>
    private async Task AssertOneLineWithoutAClusterAsync(string[] command, string expected)
    {
        var stderr = new StringWriter();
        var previous = Console.Error;
        Console.SetError(stderr);
        int exitCode;
        try
        {
            exitCode = await OstorCommandLine.RunAsync(["--gateway", $"127.0.0.1:{Ports.Free()}", .. command]);
        }
        finally
        {
            Console.SetError(previous);
        }
        output.WriteLine($"exit {exitCode}: {stderr}");
        var lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", lines[0], StringComparison.Ordinal);
        Assert.NotEqual(0, exitCode);
    }

    /// <summary>A file the command cannot write is its message alone, not .NET's name for the error (issue 29).</summary>
    [Fact]
    public async Task A_file_error_is_one_line_without_dotnet_names() =>
        await AssertOneLineWithoutAClusterAsync(["pki", "psk", "someone", "--file", Path.Combine(_root, "no-such-folder", "keys.psk")], "Could not find a part of the path");

    [Fact]
    public async Task Volume_create_while_the_database_is_gone_is_one_line_and_changes_nothing()
    {
        var postgres = await PrivatePostgres.GetAsync() ?? throw new InvalidOperationException("PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        // The Orleans ClusterId the command line uses by default; the database is this test's own.
        await using var silos = new ConfiguredSilos(await postgres.CreateDatabaseAsync("ostor_down"), new Client.Library.OstorClientOptions().ClusterId);
        await silos.StartAsync("host-1");
        await using var client = await silos.ConnectAsync();
        await new Eventually(output).MapAsync(client.GetMapAsync, m => m.Hosts.Length == 1, "host-1 registered");
        var before = await client.GetMapAsync();

        // PostgreSQL stops answering for this cluster's database: no connection is allowed any more.
        var database = new NpgsqlConnectionStringBuilder(silos.ConnectionString).Database!;
        await SetConnectionsAllowedAsync(postgres, database, allowed: false);
        try
        {
            // A connected client's change is refused with our typed error, not the driver's exception.
            var refused = await Assert.ThrowsAsync<Errors.ManagementUnavailableException>(() => client.CreateVolumeAsync("v", 4 << 20, 1));
            output.WriteLine(refused.Message);
            Assert.Contains("management service unavailable: the database did not answer", refused.Message, StringComparison.Ordinal);

            // The command line answers one line and a non-zero exit code.
            var stderr = new StringWriter();
            var previous = Console.Error;
            Console.SetError(stderr);
            int exitCode;
            try
            {
                exitCode = await OstorCommandLine.RunAsync(["--gateway", string.Join(',', silos.Gateways), "volume", "create", "v", "--size", "4MiB"]);
            }
            finally
            {
                Console.SetError(previous);
            }
            output.WriteLine($"exit {exitCode}: {stderr}");
            var lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Single(lines);
            Assert.StartsWith("ostor: management service unavailable: the database did not answer", lines[0], StringComparison.Ordinal);
            Assert.NotEqual(0, exitCode);
        }
        finally
        {
            await SetConnectionsAllowedAsync(postgres, database, allowed: true);
        }
        var after = await Eventually.RetryAsync(client.GetMapAsync);
        Assert.Equal(before.Epoch, after.Epoch);
        Assert.Null(after.FindVolume("v"));
    }

    private static async Task SetConnectionsAllowedAsync(PrivatePostgres postgres, string database, bool allowed)
    {
        await using var admin = new NpgsqlConnection(postgres.ConnectionString("postgres"));
        await admin.OpenAsync();
        await using var alter = new NpgsqlCommand($"ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {(allowed ? "true" : "false")}", admin);
        await alter.ExecuteNonQueryAsync();
        if (!allowed)
        {
            await using var terminate = new NpgsqlCommand($"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'", admin);
            await terminate.ExecuteNonQueryAsync();
        }
        NpgsqlConnection.ClearAllPools();
    }

    private static async Task<(int ExitCode, string Stderr)> RunSiloAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ostor-silo.dll"));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start ostor-silo");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("ostor-silo was still running after 60 s");
        }
        await stdout;
        return (process.ExitCode, await stderr);
    }
}
