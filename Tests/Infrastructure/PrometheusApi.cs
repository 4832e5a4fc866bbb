using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>Instant queries against a real Prometheus's HTTP API (the one <c>infra/monitoring up</c> started).</summary>
public sealed class PrometheusApi(int port) : IDisposable
{
    private readonly HttpClient _http = new() { BaseAddress = new Uri($"http://127.0.0.1:{port}/"), Timeout = TimeSpan.FromSeconds(10) };

    public sealed record Sample(IReadOnlyDictionary<string, string> Labels, double Value);

    /// <summary>The instant vector <paramref name="expression"/> evaluates to now.</summary>
    public async Task<IReadOnlyList<Sample>> QueryAsync(string expression)
    {
        using var reply = await _http.GetAsync("api/v1/query?query=" + Uri.EscapeDataString(expression));
        var body = await reply.Content.ReadFromJsonAsync<JsonElement>();
        if (!reply.IsSuccessStatusCode || body.GetProperty("status").GetString() != "success")
        {
            throw new InvalidOperationException($"prometheus refused '{expression}': {body}");
        }
        return [.. body.GetProperty("data").GetProperty("result").EnumerateArray().Select(series => new Sample(
            series.GetProperty("metric").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? ""),
            double.Parse(series.GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture)))];
    }

    /// <summary>The one value of a query that sums to a scalar-like vector; 0 when it has no series yet.</summary>
    public async Task<double> ValueAsync(string expression)
    {
        var samples = await QueryAsync(expression);
        return samples.Count switch
        {
            0 => 0,
            1 => samples[0].Value,
            _ => throw new InvalidOperationException($"'{expression}' gave {samples.Count} series, not one"),
        };
    }

    public void Dispose() => _http.Dispose();
}
