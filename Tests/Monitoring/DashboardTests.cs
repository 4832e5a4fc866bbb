using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Playwright;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace OrleansStorage.Tests.Monitoring;

/// <summary>
/// The dashboard every silo serves, on the local cluster as <c>infra/cluster up</c> makes it,
/// looked at in a real headless chromium: it shows what the cluster is, and follows it without a
/// reload when a host dies. Its HTTP endpoint takes the cluster's web password on every path,
/// answers what it does not serve with 404 and keeps answering under many clients at once.
/// </summary>
public sealed class DashboardTests(DashboardTests.Cluster cluster, ITestOutputHelper output) : IClassFixture<DashboardTests.Cluster>
{
    /// <summary>Written while a host is down: 4 segments (4 MiB each) to resync at <see cref="Cluster.RecoveryBytesPerSecond"/>, several seconds of copying.</summary>
    private const int MissedBytes = 16 << 20;

    [SkippableFact]
    public async Task It_lists_the_hosts_shows_a_new_volume_turns_a_host_killed_with_kill_9_down_and_follows_its_resync_without_a_reload()
    {
        var scripted = await cluster.StartAsync(output);
        Prerequisites.Require(HeadlessChromium.IsInstalled, "Debian's chromium is not installed (apt-get install chromium)");
        await using var chromium = await HeadlessChromium.LaunchAsync();
        var credentials = new HttpCredentials { Username = "admin", Password = scripted.WebPassword };
        var page = await chromium.Browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 1000 }, HttpCredentials = credentials });
        const string test = "dashboard";
        await page.GotoAsync(scripted.HttpOf(1).ToString());

        await Expect(page.Locator("#hosts tbody tr[data-state='Up']")).ToHaveCountAsync(3, new() { Timeout = 15_000 });
        await Expect(page.Locator("#served-by")).ToHaveTextAsync("host-1");
        output.WriteLine("screenshot: " + await HeadlessChromium.ScreenshotAsync(page, test, "1-three-hosts-up"));

        // A volume made by the CLI, as a person would, appears without a reload.
        await scripted.RunAsync("ostor", "volume", "create", "dash-vol", "--size", "64MiB", "--replicas", "3");
        var volumeRow = page.Locator("#volumes tbody tr[data-volume='dash-vol']");
        await Expect(volumeRow).ToHaveAttributeAsync("data-health", "healthy", new() { Timeout = 10_000 });
        var groups = await volumeRow.Locator(".cell").CountAsync();
        Assert.True(groups > 0, "the volume's placement groups are not drawn");
        await Expect(volumeRow.Locator(".cell[data-health='healthy']")).ToHaveCountAsync(groups);
        output.WriteLine("screenshot: " + await HeadlessChromium.ScreenshotAsync(page, test, "2-volume-created"));

        // The Orleans Dashboard beside it, in a tab of its own (the dashboard's page stays as it is).
        var orleans = await chromium.Browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 900 }, HttpCredentials = credentials });
        await orleans.GotoAsync(new Uri(scripted.HttpOf(1), "orleans/").ToString());
        await Expect(orleans).ToHaveTitleAsync("Orleans Dashboard");
        await Expect(orleans.GetByText("Active Silos", new() { Exact = false })).ToBeVisibleAsync(new() { Timeout = 15_000 });
        output.WriteLine("screenshot: " + await HeadlessChromium.ScreenshotAsync(orleans, test, "2b-orleans-dashboard"));
        await orleans.CloseAsync();

        // kill -9 a host that neither serves the page nor runs the management service (killing
        // that one is the failover the metrics test makes): the page turns it Down by itself.
        var management = await page.Locator("#management").InnerTextAsync();
        var victim = new[] { 2, 3 }.First(i => $"host-{i}" != management);
        var epochBefore = await page.Locator("#epoch").InnerTextAsync();
        using (var process = Process.GetProcessById(scripted.PidOf(victim)!.Value))
        {
            process.Kill(); // SIGKILL
        }
        var killed = Stopwatch.StartNew();
        var hostRow = page.Locator($"#hosts tbody tr[data-host='host-{victim}']");
        await Expect(hostRow).ToHaveAttributeAsync("data-state", "Down", new() { Timeout = 10_000 });
        output.WriteLine($"host-{victim} (killed) shown Down {killed.Elapsed.TotalSeconds:0.0} s after the kill; epoch {epochBefore} -> {await page.Locator("#epoch").InnerTextAsync()}");
        await Expect(volumeRow).ToHaveAttributeAsync("data-health", "degraded", new() { Timeout = 10_000 });
        // Factor 3 on 3 hosts: every group had a replica on the dead host.
        await Expect(volumeRow.Locator(".cell[data-health='degraded']")).ToHaveCountAsync(groups);
        await Expect(page.Locator("#changes li").First).ToContainTextAsync($"host-{victim}");
        output.WriteLine("screenshot: " + await HeadlessChromium.ScreenshotAsync(page, test, "3-host-killed"));
        Assert.True(await page.Locator("#problem").IsHiddenAsync(), "the page shows a problem: " + await page.Locator("#problem").InnerTextAsync());

        // Writes while it is away, then it comes back: the resync copies what it missed, paced by the
        // class's low recovery bandwidth so that the page (polling once a second) sees it under way.
        var missed = Path.Combine(scripted.Data, "missed.bin");
        await File.WriteAllBytesAsync(missed, Replicas.RandomBytes(MissedBytes, seed: 14));
        await scripted.RunAsync("ostor", "put", "dash-vol", missed);
        await scripted.UpAsync();
        var copies = page.Locator("#copies tbody tr");
        await Expect(copies.First).ToContainTextAsync($"host-{victim} (resync)", new() { Timeout = 30_000 });
        await Expect(copies.First.Locator(".bar")).ToBeVisibleAsync();
        output.WriteLine($"resync shown: {await copies.First.InnerTextAsync()}");
        output.WriteLine("screenshot: " + await HeadlessChromium.ScreenshotAsync(page, test, "4-resync-under-way"));
        await Expect(page.Locator("#copies")).ToContainTextAsync("no copies running", new() { Timeout = 120_000 });
        await Expect(hostRow).ToHaveAttributeAsync("data-state", "Up");
        await Expect(volumeRow).ToHaveAttributeAsync("data-health", "healthy", new() { Timeout = 30_000 });
        output.WriteLine("screenshot: " + await HeadlessChromium.ScreenshotAsync(page, test, "5-resync-done"));
    }

    [SkippableFact]
    public async Task Every_path_needs_the_password_unknown_paths_are_404_and_200_concurrent_clients_are_all_answered()
    {
        var scripted = await cluster.StartAsync(output);
        using (var stranger = new HttpClient { BaseAddress = scripted.HttpOf(1), Timeout = TimeSpan.FromSeconds(30) })
        {
            foreach (var path in new[] { "", "dashboard.js", "metrics", "api/overview", "orleans/", "nope" })
            {
                using var reply = await stranger.GetAsync(path);
                Assert.True(reply.StatusCode == HttpStatusCode.Unauthorized, $"GET /{path} without the password: {(int)reply.StatusCode}, not 401");
                Assert.StartsWith("Basic", reply.Headers.WwwAuthenticate.ToString(), StringComparison.Ordinal);
            }
            stranger.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:not-the-password")));
            using var wrong = await stranger.GetAsync("metrics");
            Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        }
        using var http = new HttpClient { BaseAddress = scripted.HttpOf(1), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("anyone:" + scripted.WebPassword)));
        foreach (var path in new[] { "nope", "metrics/extra", "api/nope", "api/overview/1", "orleans-not", "../../etc/passwd", "index.html/x" })
        {
            using var reply = await http.GetAsync(path);
            Assert.True(reply.StatusCode == HttpStatusCode.NotFound, $"GET /{path}: {(int)reply.StatusCode}, not 404");
        }
        foreach (var path in new[] { "", "dashboard.js", "dashboard.css", "metrics", "api/overview", "orleans/" })
        {
            using var reply = await http.GetAsync(path);
            Assert.True(reply.IsSuccessStatusCode, $"GET /{path}: {(int)reply.StatusCode}");
        }
        // Read-only: nothing but GET (and HEAD) is served.
        using (var post = await http.PostAsync("api/overview", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, post.StatusCode);
        }

        var paths = new[] { "api/overview", "metrics", "", "dashboard.js" };
        var watch = Stopwatch.StartNew();
        var replies = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            using var reply = await http.GetAsync(paths[i % paths.Length]);
            var body = await reply.Content.ReadAsStringAsync();
            return (Path: paths[i % paths.Length], reply.StatusCode, body.Length);
        }));
        output.WriteLine($"200 concurrent requests answered in {watch.Elapsed.TotalMilliseconds:0} ms");
        Assert.All(replies, r => Assert.True(r.StatusCode == HttpStatusCode.OK && r.Length > 0, $"GET /{r.Path}: {(int)r.StatusCode}, {r.Length} bytes"));
        var overview = await http.GetFromJsonAsync<JsonElement>("api/overview");
        Assert.Equal(3, overview.GetProperty("hosts").GetArrayLength());
    }

    /// <summary>One 3-host cluster for the class, started by the first test that needs it.</summary>
    public sealed class Cluster : IAsyncLifetime
    {
        /// <summary>Each host copies for recovery at most this fast (the shipped default is 64 MiB/s).</summary>
        public const long RecoveryBytesPerSecond = 1 << 20;

        private ScriptedCluster? _cluster;

        public async Task<ScriptedCluster> StartAsync(ITestOutputHelper output)
        {
            Prerequisites.Require(PrivatePostgres.FindBinDirectory() is not null, "PostgreSQL is not installed");
            if (_cluster is null)
            {
                _cluster = new ScriptedCluster(output.WriteLine, hosts: 3, netns: false);
                _cluster.SetEnvironment("OSTOR_Storage__RecoveryBandwidthBytesPerSecond", RecoveryBytesPerSecond.ToString(System.Globalization.CultureInfo.InvariantCulture));
                await _cluster.UpAsync();
            }
            _cluster.LogTo(output.WriteLine);
            return _cluster;
        }

        public Task InitializeAsync() => Task.CompletedTask;

        public async Task DisposeAsync()
        {
            if (_cluster is not null)
            {
                _cluster.LogTo(_ => { }); // no test is running any more to write to
                await _cluster.DisposeAsync();
            }
        }
    }
}
