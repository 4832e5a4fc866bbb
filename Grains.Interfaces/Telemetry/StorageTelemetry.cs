using System.Diagnostics;

namespace OrleansStorage.Telemetry;

/// <summary>
/// The names OrleansStorage measures and traces under, shared by the silo, the client library and
/// the NBD server (docs/monitoring.md lists every instrument).
/// </summary>
public static class StorageTelemetry
{
    /// <summary>The meter of every OrleansStorage instrument (<c>ostor.*</c>, exported as <c>ostor_*</c>).</summary>
    public const string MeterName = "OrleansStorage";

    /// <summary>The source of every OrleansStorage span.</summary>
    public const string ActivitySourceName = "OrleansStorage";

    /// <summary>
    /// Spans of a request's way: the client's request, the primary's admission, each replica
    /// forward. Free when nobody listens (<see cref="ActivitySource.StartActivity(string, ActivityKind)"/> returns null).
    /// </summary>
    public static readonly ActivitySource Tracing = new(ActivitySourceName);

    /// <summary>
    /// Latency histogram buckets in seconds, from a page-cache hit (tens of microseconds) to a
    /// request that waited out a failover (seconds); the exporters' defaults are for web requests in
    /// milliseconds and would put every storage request in the first bucket.
    /// </summary>
    public static readonly IReadOnlyList<double> LatencyBuckets =
        [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    /// <summary>The span of one request a client makes of a volume (a client library call, an NBD command); null when nobody records spans.</summary>
    public static Activity? StartRequest(string name, string volume, long offset, long length)
    {
        if (!Tracing.HasListeners())
        {
            return null;
        }
        var span = Tracing.StartActivity(name, ActivityKind.Internal);
        span?.SetTag("ostor.volume", volume).SetTag("ostor.offset", offset).SetTag("ostor.length", length);
        return span;
    }

    /// <summary>The span of one data request sent to <paramref name="hostId"/>; null when nobody records spans.</summary>
    public static Activity? StartSend(DataPort.DataRequestHeader request, string hostId)
    {
        if (!Tracing.HasListeners())
        {
            return null;
        }
        return Tagged(Tracing.StartActivity("ostor.send " + LabelOf(request.Op.ToString()), ActivityKind.Client), request, hostId);
    }

    /// <summary>The span of one data request a host serves, child of the sender's when the request carried it.</summary>
    public static Activity? StartServe(DataPort.DataRequestHeader request, string hostId)
    {
        if (!Tracing.HasListeners())
        {
            return null;
        }
        return Tagged(Tracing.StartActivity("ostor.serve " + LabelOf(request.Op.ToString()), ActivityKind.Server, request.Trace), request, hostId);
    }

    private static Activity? Tagged(Activity? span, DataPort.DataRequestHeader request, string hostId) =>
        span?.SetTag("ostor.host", hostId)
            .SetTag("ostor.volume_id", request.VolumeId)
            .SetTag("ostor.segment", request.SegmentIndex)
            .SetTag("ostor.offset", request.Offset)
            .SetTag("ostor.length", request.Length)
            .SetTag("ostor.epoch", request.Epoch);

    /// <summary>The variable OpenTelemetry's exporters read their collector from.</summary>
    public const string OtlpEndpointVariable = "OTEL_EXPORTER_OTLP_ENDPOINT";

    /// <summary>
    /// Whether spans go to an OTLP collector, and the endpoint to give the exporter: a configured
    /// one (<c>--otlp-endpoint</c>) wins; with only the standard variable set the exporter reads it
    /// itself (null endpoint), with <c>OTEL_EXPORTER_OTLP_PROTOCOL</c> and the path it implies.
    /// Off when neither is set. <paramref name="problem"/> names a configured value that is no URI.
    /// </summary>
    public static bool TryOtlp(string? configured, out Uri? endpoint, out string? problem)
    {
        endpoint = null;
        problem = null;
        if (!string.IsNullOrWhiteSpace(configured))
        {
            if (Uri.TryCreate(configured, UriKind.Absolute, out endpoint))
            {
                return true;
            }
            problem = $"the OTLP endpoint '{configured}' (--otlp-endpoint) is not an absolute URI, such as http://127.0.0.1:4317";
            return false;
        }
        return !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(OtlpEndpointVariable));
    }

    /// <summary>The label value of an operation or error kind: <c>ReplicaWrite</c> becomes <c>replica_write</c>.</summary>
    public static string LabelOf(string name)
    {
        var label = new System.Text.StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0)
            {
                label.Append('_');
            }
            label.Append(char.ToLowerInvariant(name[i]));
        }
        return label.ToString();
    }
}
