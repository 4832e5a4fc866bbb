using System.Diagnostics;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>Runs a program the tests depend on (PostgreSQL's tools, NBD clients, the infra scripts) and returns what it printed; a non-zero exit or a timeout throws with that output.</summary>
public static class ExternalProgram
{
    public sealed record Output(string Stdout, string Stderr)
    {
        public string All => Stdout + Stderr;
    }

    public static async Task<Output> RunAsync(string program, IEnumerable<string> arguments, TimeSpan? timeout = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }
        var command = $"{program} {string.Join(' ', start.ArgumentList)}";
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{command}: could not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{command} ran longer than {timeout ?? TimeSpan.FromMinutes(3)}");
        }
        var output = new Output(await stdout, await stderr);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{command} exited {process.ExitCode}: {output.Stderr}{output.Stdout}");
        }
        return output;
    }
}
