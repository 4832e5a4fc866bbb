using Microsoft.Playwright;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// Debian's chromium (never a downloaded browser), driven by Playwright, headless, with the flags
/// that keep it off the network: it talks only to the pages a test opens on loopback.
/// Screenshots go to <see cref="ArtifactsDirectory"/> and are kept after the run.
/// </summary>
public sealed class HeadlessChromium : IAsyncDisposable
{
    public const string ExecutablePath = "/usr/bin/chromium";

    private static readonly string[] Flags =
    [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    ];

    private readonly IPlaywright _playwright;

    private HeadlessChromium(IPlaywright playwright, IBrowser browser)
    {
        _playwright = playwright;
        Browser = browser;
    }

    public IBrowser Browser { get; }

    /// <summary>Where screenshots are kept: <c>OSTOR_TEST_ARTIFACTS</c>, else <c>.artifacts/</c> in the repository (ignored by git).</summary>
    public static string ArtifactsDirectory =>
        System.Environment.GetEnvironmentVariable("OSTOR_TEST_ARTIFACTS") is { Length: > 0 } configured
            ? configured
            : Path.Combine(ScriptedCluster.RepositoryRoot, ".artifacts");

    public static bool IsInstalled => File.Exists(ExecutablePath);

    public static async Task<HeadlessChromium> LaunchAsync()
    {
        var playwright = await Playwright.CreateAsync();
        try
        {
            var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = ExecutablePath,
                Headless = true,
                Args = Flags,
            });
            return new HeadlessChromium(playwright, browser);
        }
        catch
        {
            playwright.Dispose();
            throw;
        }
    }

    /// <summary>Saves a screenshot of the whole page as <c>{test}/{name}.png</c>; returns its path.</summary>
    public static async Task<string> ScreenshotAsync(IPage page, string test, string name)
    {
        var path = Path.Combine(ArtifactsDirectory, test, name + ".png");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = true });
        return path;
    }

    public async ValueTask DisposeAsync()
    {
        await Browser.DisposeAsync();
        _playwright.Dispose();
    }
}
