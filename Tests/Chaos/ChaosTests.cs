using System.Diagnostics;
using System.Globalization;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Chaos;

/// <summary>
/// CI's short chaos schedule: <c>infra/chaos --seconds 60 --seed 1</c> (a real cluster of 3 host
/// processes, 4 clients, PostgreSQL stopped, the management host and another host killed -9 and
/// restarted) must find no anomaly. On a failure the test prints every anomaly with its history.
/// PostgreSQL's binaries missing is a failure, never a skip: without them nothing was checked.
/// </summary>
public sealed class ChaosTests(ITestOutputHelper output)
{
    // A run takes about 3 min (1 min of set-up, 1 min of faults, 1 min of healing and checks); the
    // limit leaves room for a machine busy with other builds.
    private static readonly TimeSpan RunLimit = TimeSpan.FromMinutes(6);

    [Fact]
    public async Task A_short_seeded_chaos_run_finds_no_anomaly()
    {
        var postgres = Directory.Exists("/usr/lib/postgresql")
            && Directory.GetDirectories("/usr/lib/postgresql").Any(d => File.Exists(Path.Combine(d, "bin", "initdb")));
        Assert.True(postgres, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): infra/chaos cannot run its cluster; apt-get install postgresql");

        var root = ScriptedCluster.RepositoryRoot;
        var data = Path.Combine(Path.GetTempPath(), "ostor-chaos-" + Guid.NewGuid().ToString("N")[..8]);
        // Ports of its own: away from a developer's infra/chaos (23111, 44000, 46000) and the other tests'.
        var environment = new Dictionary<string, string>
        {
            ["OSTOR_CHAOS_DATA"] = Path.Combine(data, "cluster"),
            ["OSTOR_NO_BUILD"] = "1",
            ["OSTOR_CHAOS_PG_PORT"] = Ports.Free().ToString(CultureInfo.InvariantCulture),
            ["OSTOR_SILO_PORT_BASE"] = "23211",
            ["OSTOR_GATEWAY_PORT_BASE"] = "44100",
            ["OSTOR_DATA_PORT_BASE"] = "46100",
            ["OSTOR_HTTP_PORT_BASE"] = "0",
        };
        var passed = false;
        try
        {
            var (exitCode, lines) = await RunAsync(Path.Combine(root, "infra", "chaos"), ["--seconds", "60", "--seed", "1"], environment);
            var last = lines.LastOrDefault() ?? "";
            Assert.True(last.StartsWith("chaos: seed 1, ", StringComparison.Ordinal) && last.EndsWith(" 0 anomalies", StringComparison.Ordinal) && exitCode == 0,
                $"infra/chaos exited {exitCode}; its last line: {last}\n" + string.Join('\n', lines.SkipWhile(l => !l.StartsWith("anomaly ", StringComparison.Ordinal)))
                + $"\nthe cluster's logs are kept in {data}");
            passed = true;
        }
        finally
        {
            // infra/chaos brings its cluster down itself; this is for a run cut short by the limit.
            environment["OSTOR_DATA"] = environment["OSTOR_CHAOS_DATA"];
            environment["OSTOR_PG_PORT"] = environment["OSTOR_CHAOS_PG_PORT"];
            try
            {
                await ExternalProgram.RunAsync(Path.Combine(root, "infra", "cluster"), ["down"], TimeSpan.FromMinutes(1), environment);
            }
            catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
            {
                output.WriteLine("infra/cluster down after the run: " + ex.Message);
            }
            if (passed)
            {
                Directory.Delete(data, recursive: true);
            }
        }
    }

    /// <summary>Runs the script, every line of its output to the test's output as it comes; its exit code and lines.</summary>
    private async Task<(int ExitCode, List<string> Lines)> RunAsync(string program, string[] arguments, IReadOnlyDictionary<string, string> environment)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }
        var lines = new List<string>();
        using var process = new Process { StartInfo = start };
        DataReceivedEventHandler collect = (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }
            lock (lines)
            {
                lines.Add(e.Data);
            }
            output.WriteLine(e.Data);
        };
        process.OutputDataReceived += collect;
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                output.WriteLine("stderr: " + e.Data);
            }
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var deadline = new CancellationTokenSource(RunLimit);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"infra/chaos ran longer than {RunLimit.TotalMinutes:0} min; its output so far:\n{string.Join('\n', lines)}\nthe cluster's logs are kept in {environment["OSTOR_CHAOS_DATA"]}");
        }
        process.WaitForExit(); // the last lines of the redirected output
        lock (lines)
        {
            return (process.ExitCode, [.. lines]);
        }
    }
}
