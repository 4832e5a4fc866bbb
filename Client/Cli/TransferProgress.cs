using System.Diagnostics;
using System.Globalization;

namespace OrleansStorage.Client.Cli;

/// <summary>A progress bar on standard error while a transfer runs (only when it is a terminal).</summary>
public sealed class TransferProgress : IDisposable
{
    private readonly string _label;
    private readonly long _total;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Timer? _timer;
    private long _done;
    private long _slowestTicks;

    public TransferProgress(string label, long total)
    {
        _label = label;
        _total = total;
        if (!Console.IsErrorRedirected && total > 0)
        {
            _timer = new Timer(_ => Draw(), null, TimeSpan.FromMilliseconds(200), TimeSpan.FromMilliseconds(200));
        }
    }

    public TimeSpan Elapsed => _clock.Elapsed;

    /// <summary>Counts a finished chunk and how long its volume call took (the slowest one is reported: it shows stalls, e.g. a host failing over).</summary>
    public void Add(long bytes, TimeSpan latency = default)
    {
        Interlocked.Add(ref _done, bytes);
        long seen;
        while (latency.Ticks > (seen = Interlocked.Read(ref _slowestTicks))
               && Interlocked.CompareExchange(ref _slowestTicks, latency.Ticks, seen) != seen)
        {
        }
    }

    public string Summary()
    {
        var seconds = Math.Max(_clock.Elapsed.TotalSeconds, 1e-6);
        var slowest = TimeSpan.FromTicks(Interlocked.Read(ref _slowestTicks));
        return string.Create(CultureInfo.InvariantCulture,
            $"{ByteSize.Format(_done)} in {seconds:0.00} s ({_done / seconds / (1 << 20):0.0} MiB/s{(slowest > TimeSpan.Zero ? $", slowest chunk {slowest.TotalMilliseconds:0} ms" : "")})");
    }

    private void Draw()
    {
        var done = Interlocked.Read(ref _done);
        var fraction = Math.Clamp((double)done / _total, 0, 1);
        var rate = done / Math.Max(_clock.Elapsed.TotalSeconds, 1e-6) / (1 << 20);
        Console.Error.Write(string.Create(CultureInfo.InvariantCulture,
            $"\r{_label} {ProgressBar.Render(fraction)} {fraction * 100,5:0.0}% {ByteSize.Format(done)} / {ByteSize.Format(_total)} {rate:0.0} MiB/s "));
    }

    public void Dispose()
    {
        if (_timer is not null)
        {
            _timer.Dispose();
            Draw();
            Console.Error.WriteLine();
        }
    }
}
