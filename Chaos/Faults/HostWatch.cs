using System.Collections.Concurrent;
using OrleansStorage.Chaos.Checking;
using OrleansStorage.Chaos.History;

namespace OrleansStorage.Chaos.Faults;

/// <summary>
/// Watches every host's silo process through the run: a process that ends without the injector
/// having killed it (or excused it: a host cut off by a partition stops itself once Orleans
/// declares it dead) is an anomaly, reported with the end of its log.
/// </summary>
public sealed class HostWatch(LocalCluster cluster, HistoryRecorder clock)
{
    private readonly ConcurrentDictionary<int, string> _expected = new();
    private readonly ConcurrentQueue<Anomaly> _deaths = new();
    private readonly ConcurrentQueue<string> _excusedDeaths = new();
    private readonly Dictionary<int, int> _running = [];

    /// <summary>The injector is about to kill this process.</summary>
    public void Expect(int pid, string why) => _expected[pid] = why;

    public IReadOnlyList<Anomaly> UnbiddenDeaths => [.. _deaths];

    /// <summary>Deaths that were allowed but not caused by a kill (a partitioned host stopping itself).</summary>
    public IReadOnlyList<string> ExcusedDeaths => [.. _excusedDeaths];

    public async Task RunAsync(CancellationToken stop)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(250));
        try
        {
            do
            {
                Look();
            }
            while (await timer.WaitForNextTickAsync(stop));
        }
        catch (OperationCanceledException)
        {
        }
        Look();
    }

    /// <summary>One look at every host: new pids are remembered, remembered ones that ended are judged.</summary>
    public void Look()
    {
        lock (_running)
        {
            for (var host = 1; host <= cluster.Hosts; host++)
            {
                if (_running.TryGetValue(host, out var known) && !LocalCluster.IsAlive(known))
                {
                    _running.Remove(host);
                    if (_expected.TryGetValue(known, out var why))
                    {
                        if (!why.StartsWith("kill", StringComparison.Ordinal))
                        {
                            _excusedDeaths.Enqueue($"host-{host} (pid {known}) exited during {why}");
                        }
                    }
                    else
                    {
                        var now = clock.Now;
                        _deaths.Enqueue(Anomaly.NotAboutABlock("host died unbidden",
                            $"host-{host}'s silo (pid {known}) exited at about {now.TotalSeconds:0.000} s and no fault killed it; the end of its log:\n{Indent(cluster.LogTail(host, 15))}", now));
                    }
                }
                if (cluster.PidOf(host) is { } pid && LocalCluster.IsAlive(pid))
                {
                    _running[host] = pid;
                }
            }
        }
    }

    private static string Indent(string text) => string.Join('\n', text.Split('\n').Select(l => "      " + l));
}
