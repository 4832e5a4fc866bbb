using System.Diagnostics;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// <c>infra/cluster</c> after what a person does to it. Issue 29: 'infra/cluster up' right after a
/// kill -9 said "host-2 already running (pid N)" and then failed on the stale pid file. A pid
/// file is now believed only while its process is ours and not dying.
/// </summary>
public sealed class ClusterScriptTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Up_after_a_host_was_killed_starts_it_again_even_if_its_pid_went_to_another_process()
    {
        Prerequisites.Require(PrivatePostgres.FindBinDirectory() is not null, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)");
        await using var cluster = new ScriptedCluster(output.WriteLine, hosts: 2, netns: false);
        await cluster.UpAsync();

        // kill -9, and the pid taken by another process, as after a wrap or a reboot.
        using (var silo = Process.GetProcessById(cluster.PidOf(2)!.Value))
        {
            silo.Kill();
            await silo.WaitForExitAsync();
        }
        using var stranger = Process.Start(new ProcessStartInfo("sleep", "300") { UseShellExecute = false })!;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(cluster.Data, "pids", "host-2.pid"), stranger.Id + "\n");
            Assert.Contains("host-2: not running", await cluster.RunAsync("cluster", "status"), StringComparison.Ordinal);

            await cluster.UpAsync();
            Assert.NotEqual(stranger.Id, cluster.PidOf(2));
            Assert.True(cluster.IsRunning(2), "host-2 was not started again");
            Assert.False(stranger.HasExited, "infra/cluster touched a process that is not its own");
        }
        finally
        {
            stranger.Kill();
        }
    }
}
