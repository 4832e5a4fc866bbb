using System.Diagnostics;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// Copies what a child process prints (stdout and stderr, line by line) into a file the test reads
/// when it needs to explain a failure. Lines that arrive after <see cref="Dispose"/> are dropped:
/// the runtime may deliver a process's last lines after its Exited event, and an exception on that
/// thread-pool callback would take the whole test host down with it.
/// </summary>
public sealed class ProcessLog : IDisposable
{
    private readonly StreamWriter _writer;
    private bool _closed;

    private ProcessLog(string path, bool append) => _writer = new StreamWriter(path, append) { AutoFlush = true };

    /// <summary>Starts reading the process's redirected output into <paramref name="path"/>.</summary>
    public static ProcessLog Attach(Process process, string path, bool append = false)
    {
        var log = new ProcessLog(path, append);
        process.OutputDataReceived += (_, e) => log.Write(e.Data);
        process.ErrorDataReceived += (_, e) => log.Write(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return log;
    }

    /// <summary>What has been written so far; the file stays open for more.</summary>
    public static string Read(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return new StreamReader(file).ReadToEnd();
    }

    public void Dispose()
    {
        lock (_writer)
        {
            _closed = true;
            _writer.Dispose();
        }
    }

    private void Write(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_writer)
        {
            if (!_closed)
            {
                _writer.WriteLine(line);
            }
        }
    }
}
