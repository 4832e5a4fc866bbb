using System.Diagnostics;
using System.Globalization;

namespace OrleansStorage.Chaos.Faults;

/// <summary>
/// The cluster <c>infra/chaos</c> brought up with <c>infra/cluster</c>, in its own data folder and
/// ports (from the environment the script set): its hosts' pids and logs, and the scripts a
/// person would type to break and mend it.
/// </summary>
public sealed class LocalCluster(string root, string data, int hosts, bool netns)
{
    public int Hosts => hosts;

    public bool Netns => netns;

    public string Data => data;

    public string Pki => Path.Combine(data, "pki");

    public string[] Gateways => File.ReadAllText(Path.Combine(data, "gateways")).Trim().Split(',');

    /// <summary>Host N's silo process id as its pid file says, or null (no file, or caught mid-write).</summary>
    public int? PidOf(int host)
    {
        try
        {
            var text = File.ReadAllText(Path.Combine(data, "pids", $"host-{host}.pid")).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Whether a process runs (a zombie does not).</summary>
    public static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var state = stat[(stat.LastIndexOf(')') + 2)..].TrimStart();
            return state.Length > 0 && state[0] is not ('Z' or 'X');
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// SIGKILL, as <c>kill -9</c>: no shutdown code of the silo runs. Returns once the process is
    /// gone: <c>infra/cluster up</c> right after would otherwise find it still "running" (kill -0
    /// succeeds on a dying process) and wait for a host that is about to vanish.
    /// </summary>
    public static async Task KillNineAsync(int pid)
    {
        using (var process = Process.GetProcessById(pid))
        {
            process.Kill();
        }
        for (var waited = 0; waited < 100 && Directory.Exists($"/proc/{pid}"); waited++)
        {
            await Task.Delay(100);
        }
    }

    /// <summary>The last lines of host N's log.</summary>
    public string LogTail(int host, int lines)
    {
        var path = Path.Combine(data, "logs", $"host-{host}.log");
        if (!File.Exists(path))
        {
            return "(no log)";
        }
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        stream.Seek(Math.Max(0, stream.Length - 64 * 1024), SeekOrigin.Begin);
        using var reader = new StreamReader(stream);
        var tail = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return string.Join('\n', tail.TakeLast(lines));
    }

    /// <summary>
    /// Starts every host that does not run (a restart after kill -9) and waits until all serve.
    /// Nothing when all run: <c>infra/cluster up --netns</c> also restarts PostgreSQL (to make it
    /// listen on the bridge), a fault of its own.
    /// </summary>
    public Task<string> StartMissingHostsAsync() =>
        Enumerable.Range(1, hosts).All(h => PidOf(h) is { } pid && IsAlive(pid))
            ? Task.FromResult("every host runs")
            : RunAsync(Path.Combine(root, "infra", "cluster"), ["up", "--hosts", hosts.ToString(CultureInfo.InvariantCulture), .. netns ? new[] { "--netns" } : []], TimeSpan.FromMinutes(3));

    /// <summary>Host N's volumes immutable (every write, even through an open file, fails with EPERM) or writable again.</summary>
    public Task<string> SetDiskReadOnlyAsync(int host, bool readOnly)
    {
        var volumes = Path.Combine(data, $"host-{host}", "volumes");
        return Directory.Exists(volumes)
            ? RunAsync("chattr", ["-R", readOnly ? "+i" : "-i", volumes], TimeSpan.FromMinutes(1))
            : Task.FromResult("");
    }

    /// <summary>
    /// Asks host N's next start to roll its volumes back to its durable image (the silo does it
    /// before it opens them): called with the host killed, this makes the kill a power cut.
    /// </summary>
    public void CutPower(int host) => File.WriteAllText(Path.Combine(DurableImageOf(host), "power-cut"), "");

    /// <summary>Host N's fsyncs fail from now on (its store fails for good) or succeed again.</summary>
    public void SetFsyncFailing(int host, bool failing)
    {
        var flag = Path.Combine(DurableImageOf(host), "fail-fsync");
        if (failing)
        {
            File.WriteAllText(flag, "");
        }
        else
        {
            File.Delete(flag);
        }
    }

    // Where the silo keeps what its fsyncs made durable (StorageServerOptions.DurableImageFolderName;
    // infra/chaos switches the recording on).
    private string DurableImageOf(int host)
    {
        var image = Path.Combine(data, $"host-{host}", "durable-image");
        if (!Directory.Exists(image))
        {
            throw new InvalidOperationException($"host-{host} records no durable image ({image} is missing): was it started with OSTOR_Storage__RecordDurableImage=true?");
        }
        return image;
    }

    public Task<string> StopDatabaseAsync() => PostgresAsync("pg_stop");

    public Task<string> StartDatabaseAsync() => PostgresAsync("pg_start");

    public Task<string> PartitionAsync(int host, string[] cutFrom) =>
        RunAsync(Path.Combine(root, "infra", "partition"), [$"host-{host}", .. cutFrom.Length > 0 ? ["--from", .. cutFrom] : Array.Empty<string>()], TimeSpan.FromMinutes(1));

    public Task<string> HealPartitionsAsync() => RunAsync(Path.Combine(root, "infra", "partition"), ["--heal"], TimeSpan.FromMinutes(1));

    // infra/lib/postgres.sh as infra/cluster uses it; infra/chaos exported where it listens.
    private Task<string> PostgresAsync(string function) =>
        RunAsync("bash", ["-c", $"set -euo pipefail; source \"$OSTOR_ROOT/infra/lib/postgres.sh\"; {function}"], TimeSpan.FromMinutes(2));

    /// <summary>Runs a script with this process's environment; its output, or an exception with it when it fails.</summary>
    private async Task<string> RunAsync(string program, string[] arguments, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        start.Environment["OSTOR_ROOT"] = root;
        start.Environment["OSTOR_DATA"] = data;
        start.Environment["OSTOR_NO_BUILD"] = "1";
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{program}: could not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} ran longer than {timeout.TotalSeconds:0} s");
        }
        var output = (await stdout) + (await stderr);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} exited {process.ExitCode}: {output.Trim()}");
        }
        return output;
    }
}
