using System.Collections.Concurrent;
using System.Diagnostics;
using OrleansStorage.Telemetry;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Monitoring;

/// <summary>
/// One write followed as one trace: the client's request, its send to the primary, the primary's
/// admission, its forwards and each replica's serving of them, linked across the data port by the
/// trace block in the frame (the silos run in this process, so one listener sees every span).
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class TracingTests(StorageClusterFixture fixture, ITestOutputHelper output)
{
    private const string TestSourceName = "OrleansStorage.Tests.Tracing";
    private static readonly ActivitySource TestSource = new(TestSourceName);

    [SkippableFact]
    public async Task A_replicated_write_is_one_trace_from_the_client_to_every_replica()
    {
        fixture.SkipIfUnavailable();
        var name = "traced-" + Guid.NewGuid().ToString("N")[..8];
        await fixture.Client.CreateVolumeAsync(name, 8 << 20, 3);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        await volume.WriteAsync(0, new byte[4096]); // first write: leases, pause registration, out of the trace

        var spans = new ConcurrentBag<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is StorageTelemetry.ActivitySourceName or TestSourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Add,
        };
        ActivitySource.AddActivityListener(listener);
        ActivityTraceId traceId;
        using (var root = TestSource.StartActivity("test write")!)
        {
            traceId = root.TraceId;
            await volume.WriteAsync(4096, new byte[4096]);
        }
        // A replica's span may stop a moment after the primary answered.
        await new Eventually(output).UntilAsync(() => Task.FromResult(spans.Count(s => s.TraceId == traceId && s.OperationName == "ostor.serve replica_write") >= 2),
            "both replicas' spans", TimeSpan.FromSeconds(10));

        var trace = spans.Where(s => s.TraceId == traceId).ToList();
        foreach (var span in trace.OrderBy(s => s.StartTimeUtc))
        {
            output.WriteLine($"{span.OperationName,-28} {span.SpanId} parent {span.ParentSpanId} host {span.GetTagItem("ostor.host")} {span.Duration.TotalMilliseconds:0.000} ms");
        }
        var request = Single(trace, "ostor.write");
        var send = Single(trace, "ostor.send write");
        var admit = Single(trace, "ostor.serve write");
        Assert.Equal(request.SpanId, send.ParentSpanId);
        Assert.Equal(send.SpanId, admit.ParentSpanId);
        var primary = (string)admit.GetTagItem("ostor.host")!;
        var forwards = trace.Where(s => s.OperationName == "ostor.send replica_write").ToList();
        var replicas = trace.Where(s => s.OperationName == "ostor.serve replica_write").ToList();
        Assert.Equal(2, forwards.Count);
        Assert.Equal(2, replicas.Count);
        Assert.All(forwards, f => Assert.True(IsUnder(f, admit, trace), $"forward {f.SpanId} is not under the primary's admission"));
        Assert.All(replicas, r => Assert.Contains(forwards, f => f.SpanId == r.ParentSpanId));
        var replicaHosts = replicas.Select(r => (string)r.GetTagItem("ostor.host")!).ToHashSet();
        Assert.Equal(2, replicaHosts.Count);
        Assert.DoesNotContain(primary, replicaHosts);
    }

    [SkippableFact]
    public async Task Nothing_is_traced_when_no_one_listens()
    {
        fixture.SkipIfUnavailable();
        var name = "untraced-" + Guid.NewGuid().ToString("N")[..8];
        await fixture.Client.CreateVolumeAsync(name, 8 << 20, 2);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        Assert.False(StorageTelemetry.Tracing.HasListeners());
        await volume.WriteAsync(0, new byte[4096]);
        Assert.Null(StorageTelemetry.StartRequest("ostor.write", name, 0, 4096));
    }

    private static Activity Single(List<Activity> trace, string name)
    {
        var found = trace.Where(s => s.OperationName == name).ToList();
        Assert.True(found.Count == 1, $"{found.Count} spans named '{name}' in the trace, not one: {string.Join(", ", trace.Select(s => s.OperationName))}");
        return found[0];
    }

    private static bool IsUnder(Activity span, Activity ancestor, List<Activity> trace)
    {
        for (var parent = span.ParentSpanId; parent != default;)
        {
            if (parent == ancestor.SpanId)
            {
                return true;
            }
            parent = trace.FirstOrDefault(s => s.SpanId == parent)?.ParentSpanId ?? default;
        }
        return false;
    }
}
