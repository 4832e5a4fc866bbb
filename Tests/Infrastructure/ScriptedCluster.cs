using System.Diagnostics;
using System.Globalization;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// The local cluster of <c>infra/cluster</c> (with <c>--netns</c>: every host in its own network
/// namespace), driven through the scripts a person would type, in a data folder, namespaces,
/// subnet and ports of its own (so it never touches the developer's cluster in .data).
/// <see cref="PartitionAsync"/> and <see cref="HealAsync"/> are <c>infra/partition</c>.
/// </summary>
public sealed class ScriptedCluster : IAsyncDisposable
{
    private readonly Dictionary<string, string> _environment;
    private Action<string> _log;

    /// <param name="log">Where the scripts' output goes (a test's output).</param>
    public ScriptedCluster(Action<string> log, int hosts, bool netns)
    {
        _log = log;
        Hosts = hosts;
        Netns = netns;
        Data = Path.Combine(Path.GetTempPath(), "ostor-scripted-" + Guid.NewGuid().ToString("N")[..8]);
        var id = Environment.ProcessId % 200 + 20;
        _environment = new()
        {
            ["OSTOR_DATA"] = Data,
            ["OSTOR_NO_BUILD"] = "1",
            ["OSTOR_PG_PORT"] = Ports.Free().ToString(CultureInfo.InvariantCulture),
            ["OSTOR_NETNS_PREFIX"] = "ostt" + id.ToString(CultureInfo.InvariantCulture),
            ["OSTOR_NETNS_SUBNET"] = $"10.231.{id}",
            // Fixed bases (infra/cluster numbers the hosts' ports from them), away from the
            // developer's cluster (11111, 30000) and from the ephemeral range the tests' own silos use.
            ["OSTOR_SILO_PORT_BASE"] = SiloPortOf(1).ToString(CultureInfo.InvariantCulture),
            ["OSTOR_GATEWAY_PORT_BASE"] = netns ? "31000" : "31100",
            ["OSTOR_DATA_PORT_BASE"] = netns ? "32100" : "32200",
            ["OSTOR_HTTP_PORT_BASE"] = HttpPortBase.ToString(CultureInfo.InvariantCulture),
        };
    }

    public int Hosts { get; }

    /// <summary>Host 1's HTTP port (dashboard, /metrics); host N serves on this + N - 1.</summary>
    public int HttpPortBase => Netns ? 18200 : 18300;

    /// <summary>Host N's dashboard and /metrics (on loopback; only a cluster outside namespaces is reached this way).</summary>
    public Uri HttpOf(int host) => new($"http://127.0.0.1:{HttpPortBase + host - 1}/");

    /// <summary>The password of the hosts' HTTP endpoints, which <c>infra/cluster up</c> made beside the certificates.</summary>
    public string WebPassword => File.ReadAllText(Path.Combine(Pki, "web.password")).Trim();

    /// <summary>Host N's silo process id, or null when it is not running.</summary>
    public int? PidOf(int host)
    {
        var pidFile = Path.Combine(Data, "pids", $"host-{host}.pid");
        return File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid) ? pid : null;
    }

    public bool Netns { get; }

    public string Data { get; }

    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "infra", "cluster")))
                {
                    return dir.FullName;
                }
            }
            throw new InvalidOperationException("infra/cluster not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>Why this machine cannot run the cluster in namespaces, or null.</summary>
    public static string? NetnsUnavailable()
    {
        if (Environment.UserName != "root")
        {
            return "network namespaces need root";
        }
        try
        {
            using var probe = Process.Start(new ProcessStartInfo("ip", "netns list") { RedirectStandardOutput = true, RedirectStandardError = true })!;
            probe.WaitForExit();
            return probe.ExitCode == 0 ? null : "'ip netns list' failed: " + probe.StandardError.ReadToEnd().Trim();
        }
        catch (Exception ex)
        {
            return "iproute2's 'ip' cannot run: " + ex.Message;
        }
    }

    /// <summary>The certificates <c>infra/cluster up</c> made; clients present its admin certificate.</summary>
    public string Pki => Path.Combine(Data, "pki");

    /// <summary>Host N's silo port (silo-to-silo traffic only).</summary>
    public int SiloPortOf(int host) => (Netns ? 21111 : 21211) + host - 1;

    public string[] Gateways => File.ReadAllText(Path.Combine(Data, "gateways")).Trim().Split(',');

    public string GatewayOf(int host) => Gateways[host - 1];

    public Task UpAsync() => Netns
        ? RunAsync("cluster", "up", "--netns", "--hosts", Hosts.ToString(CultureInfo.InvariantCulture))
        : RunAsync("cluster", "up", "--hosts", Hosts.ToString(CultureInfo.InvariantCulture));

    public Task PartitionAsync(int host, params string[] from) =>
        from.Length == 0 ? RunAsync("partition", $"host-{host}") : RunAsync("partition", [$"host-{host}", "--from", .. from]);

    public Task HealAsync() => RunAsync("partition", "--heal");

    /// <summary>Whether host N's silo process runs.</summary>
    public bool IsRunning(int host)
    {
        var pidFile = Path.Combine(Data, "pids", $"host-{host}.pid");
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid))
        {
            return false;
        }
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>Runs infra/<paramref name="script"/> on this cluster; its output goes to the log; a non-zero exit throws.</summary>
    public Task<string> RunAsync(string script, params string[] arguments) => RunAsync(script, TimeSpan.FromMinutes(4), arguments);

    public async Task<string> RunAsync(string script, TimeSpan timeout, params string[] arguments)
    {
        var command = $"infra/{script} {string.Join(' ', arguments)}";
        try
        {
            var output = await ExternalProgram.RunAsync(Path.Combine(RepositoryRoot, "infra", script), arguments, timeout, _environment);
            _log($"$ {command}\n{output.All.TrimEnd()}");
            return output.All;
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            _log($"$ {command}\n{ex.Message}");
            throw;
        }
    }

    /// <summary>Where the scripts' output goes from now on (a cluster shared by a class's tests: the running test's output).</summary>
    public void LogTo(Action<string> log) => _log = log;

    /// <summary>A client of this cluster presenting the certificate of <paramref name="client"/> from its PKI folder.</summary>
    public Task<Client.Library.OstorClient> ConnectAsync(string client)
    {
        var options = new Client.Library.OstorClientOptions { PkiDirectory = Pki, ClientName = client, SubscribeToMapChanges = false, ConnectTimeout = TimeSpan.FromSeconds(20) };
        options.Gateways.Clear();
        foreach (var gateway in Gateways)
        {
            options.Gateways.Add(gateway);
        }
        return Client.Library.OstorClient.ConnectAsync(options);
    }

    /// <summary>Sets a variable for every script run after this (e.g. OSTOR_PROMETHEUS_PORT).</summary>
    public void SetEnvironment(string name, string value) => _environment[name] = value;

    /// <summary>The variables the scripts run with: for a program started beside them (an NBD server).</summary>
    public IReadOnlyDictionary<string, string> Variables => _environment;

    public async ValueTask DisposeAsync()
    {
        if (File.Exists(Path.Combine(Data, "pids", "prometheus.pid")))
        {
            try
            {
                await RunAsync("monitoring", "down");
            }
            catch (InvalidOperationException)
            {
            }
        }
        if (Netns)
        {
            try
            {
                await RunAsync("partition", "--heal");
            }
            catch (InvalidOperationException)
            {
            }
        }
        try
        {
            await RunAsync("cluster", "down");
        }
        finally
        {
            try
            {
                Directory.Delete(Data, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
