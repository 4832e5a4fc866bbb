using System.Collections.Concurrent;
using System.Net;
using System.Text;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A stand-in OTLP/HTTP collector on loopback: it takes every export (POST /v1/traces, protobuf)
/// and keeps its bytes, so a test can see which spans real processes sent (their names are plain
/// UTF-8 inside the protobuf). It answers 200 with an empty body, what an OTLP receiver answers.
/// </summary>
public sealed class OtlpCollector : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly ConcurrentQueue<byte[]> _exports = new();
    private readonly Task _serving;

    public OtlpCollector()
    {
        Port = Ports.Free();
        _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
        _listener.Start();
        _serving = ServeAsync();
    }

    public int Port { get; }

    /// <summary>What to set OTEL_EXPORTER_OTLP_ENDPOINT to (with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf).</summary>
    public string Endpoint => $"http://127.0.0.1:{Port}";

    public int Exports => _exports.Count;

    /// <summary>Whether any export so far names a span <paramref name="name"/>.</summary>
    public bool Saw(string name)
    {
        var needle = Encoding.UTF8.GetBytes(name);
        return _exports.Any(body => body.AsSpan().IndexOf(needle) >= 0);
    }

    private async Task ServeAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }
            using (var body = new MemoryStream())
            {
                await context.Request.InputStream.CopyToAsync(body);
                if (context.Request.HttpMethod == "POST" && context.Request.Url?.AbsolutePath == "/v1/traces")
                {
                    _exports.Enqueue(body.ToArray());
                }
            }
            context.Response.StatusCode = context.Request.Url?.AbsolutePath == "/v1/traces" ? 200 : 404;
            context.Response.ContentType = "application/x-protobuf";
            context.Response.Close();
        }
    }

    public void Dispose()
    {
        _listener.Close();
        _serving.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing).GetAwaiter().GetResult();
    }
}
