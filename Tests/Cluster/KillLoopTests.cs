using System.Globalization;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// <c>infra/kill-test --rounds N</c> on a cluster of its own (three ostor-silo processes and a
/// private PostgreSQL, started by <c>infra/cluster</c>): each round kills a random host, the
/// management host among them, with kill -9 at a random moment of a write with forced unit
/// access or a final flush; every round reads everything back and compares every replica.
/// OSTOR_KILL_ROUNDS sets the rounds (3 here; 20 is the full run), OSTOR_KILL_SEED replays one.
/// </summary>
public sealed class KillLoopTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Random_hosts_killed_under_a_writer_with_fua_and_flushes_lose_nothing()
    {
        Prerequisites.Require(PrivatePostgres.FindBinDirectory() is not null, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)");
        var rounds = Environment.GetEnvironmentVariable("OSTOR_KILL_ROUNDS") is { Length: > 0 } r ? r : "3";
        var seed = Environment.GetEnvironmentVariable("OSTOR_KILL_SEED") is { Length: > 0 } s
            ? s
            : Random.Shared.Next(1, 100_000).ToString(CultureInfo.InvariantCulture);
        output.WriteLine($"seed {seed} (replay with OSTOR_KILL_SEED={seed})");

        await using var cluster = new ScriptedCluster(output.WriteLine, 3, netns: false);
        await cluster.RunAsync("kill-test", TimeSpan.FromMinutes(20), "--rounds", rounds, "--seed", seed, "--size", "64MiB");
    }
}
