using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static OrleansStorage.Tests.Nbd.NbdClientTools;

namespace OrleansStorage.Tests.Monitoring;

/// <summary>
/// The alert rules of infra/prometheus, checked by Prometheus's own tool: they parse, and each
/// fires on the series that should fire it (a host Down, groups degraded or unavailable, a host
/// not answering, mismatches rising across a failover, a disk past 85 %) and only then.
/// </summary>
public sealed class AlertRuleTests(ITestOutputHelper output)
{
    private static string Rules => Path.Combine(ScriptedCluster.RepositoryRoot, "infra", "prometheus");

    [SkippableFact]
    public async Task The_rules_pass_promtool_check_and_their_unit_tests()
    {
        Require("promtool", "prometheus");
        var check = await ExternalProgram.RunAsync("promtool", ["check", "rules", Path.Combine(Rules, "ostor-rules.yml")]);
        output.WriteLine(check.All);
        Assert.Contains("SUCCESS: 6 rules found", check.All, StringComparison.Ordinal);
        var test = await ExternalProgram.RunAsync("promtool", ["test", "rules", Path.Combine(Rules, "ostor-rules.test.yml")]);
        output.WriteLine(test.All);
        Assert.Contains("SUCCESS", test.All, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task A_rule_that_does_not_fire_as_its_test_expects_fails_promtool()
    {
        Require("promtool", "prometheus");
        // The same tests against rules whose degraded alert waits 10 minutes: promtool must fail them.
        var scratch = Directory.CreateTempSubdirectory("ostor-rules-");
        try
        {
            var rules = await File.ReadAllTextAsync(Path.Combine(Rules, "ostor-rules.yml"));
            var slow = rules.Replace("expr: max by (volume) (ostor_placement_groups{health=\"degraded\"}) > 0\n        for: 1m",
                "expr: max by (volume) (ostor_placement_groups{health=\"degraded\"}) > 0\n        for: 10m", StringComparison.Ordinal);
            Assert.NotEqual(rules, slow);
            await File.WriteAllTextAsync(Path.Combine(scratch.FullName, "ostor-rules.yml"), slow);
            File.Copy(Path.Combine(Rules, "ostor-rules.test.yml"), Path.Combine(scratch.FullName, "ostor-rules.test.yml"));
            var failed = await Assert.ThrowsAsync<InvalidOperationException>(() =>
                ExternalProgram.RunAsync("promtool", ["test", "rules", Path.Combine(scratch.FullName, "ostor-rules.test.yml")]));
            output.WriteLine(failed.Message);
            Assert.Contains("OstorGroupsDegraded", failed.Message, StringComparison.Ordinal);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }
}
