using System.Diagnostics;
using System.Text;

namespace OrleansStorage.Tests.Nbd;

/// <summary>
/// One qemu-io process kept open on an image: every command it is given goes over the same
/// connection (an NBD export's, as a virtual machine's disk would), unlike one qemu-io per command.
/// </summary>
internal sealed class QemuIoSession : IAsyncDisposable
{
    private const string Prompt = "qemu-io> ";

    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly Lock _gate = new();
    private readonly Task _readingOut;
    private readonly Task _readingErr;
    private int _consumed;

    private QemuIoSession(Process process)
    {
        _process = process;
        _readingOut = CollectAsync(process.StandardOutput);
        _readingErr = CollectAsync(process.StandardError);
    }

    /// <summary>Starts qemu-io on <paramref name="imageOptions"/> (--image-opts) with <paramref name="objects"/> (--object each) and waits for its first prompt.</summary>
    public static async Task<QemuIoSession> OpenAsync(string imageOptions, params string[] objects)
    {
        NbdClientTools.Require("qemu-io", "qemu-utils");
        // Its errors into the same pipe as its prompts, in the order it wrote them.
        var start = new ProcessStartInfo("sh") { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("exec qemu-io \"$@\" 2>&1");
        start.ArgumentList.Add("qemu-io");
        foreach (var item in objects)
        {
            start.ArgumentList.Add("--object");
            start.ArgumentList.Add(item);
        }
        start.ArgumentList.Add("--image-opts");
        start.ArgumentList.Add(imageOptions);
        var session = new QemuIoSession(Process.Start(start)!);
        var opened = await session.NextAsync(TimeSpan.FromSeconds(30));
        if (session._process.HasExited)
        {
            throw new InvalidOperationException($"qemu-io could not open {imageOptions}: {opened}");
        }
        return session;
    }

    /// <summary>Runs one command and returns what it printed (errors included); an exited qemu-io returns what it printed last.</summary>
    public async Task<string> RunAsync(string command, TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            await _process.StandardInput.WriteLineAsync(command);
            await _process.StandardInput.FlushAsync();
        }
        return await NextAsync(timeout);
    }

    /// <summary>Everything printed up to the next prompt (or until qemu-io exits), and not returned before.</summary>
    private async Task<string> NextAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            lock (_gate)
            {
                var text = _output.ToString(_consumed, _output.Length - _consumed);
                var prompt = text.IndexOf(Prompt, StringComparison.Ordinal);
                if (prompt >= 0 || (_process.HasExited && _readingOut.IsCompleted && _readingErr.IsCompleted))
                {
                    var end = prompt >= 0 ? prompt + Prompt.Length : text.Length;
                    _consumed += end;
                    return prompt >= 0 ? text[..prompt] : text + $"\n(qemu-io exited with {_process.ExitCode})";
                }
            }
            if (DateTime.UtcNow >= deadline)
            {
                throw new TimeoutException($"qemu-io printed no prompt within {timeout.TotalSeconds:0} s; so far: {_output}");
            }
            await Task.Delay(50);
        }
    }

    private async Task CollectAsync(StreamReader reader)
    {
        var buffer = new char[4096];
        int read;
        while ((read = await reader.ReadAsync(buffer)) > 0)
        {
            lock (_gate)
            {
                _output.Append(buffer, 0, read);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
        await _process.WaitForExitAsync();
        await Task.WhenAll(_readingOut, _readingErr);
        _process.Dispose();
    }
}
