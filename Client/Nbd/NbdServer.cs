using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using OrleansStorage.Client.Library;

namespace OrleansStorage.Client.Nbd;

/// <summary>Exports OrleansStorage volumes over the NBD protocol to qemu, nbd-client, libnbd tools and fio.</summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly NbdExports _exports;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly List<Task> _connections = [];
    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _accepting = Task.CompletedTask;

    public NbdServer(OstorClient client, NbdServerOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _exports = new NbdExports(client, options.Exports);
        _listener = new TcpListener(options.Listen);
    }

    public IPEndPoint LocalEndpoint => (IPEndPoint)_listener.LocalEndpoint;

    /// <summary>Listens and accepts connections in the background until disposed.</summary>
    public void Start()
    {
        _listener.Start(backlog: 64);
        NbdLog.Listening(_logger, LocalEndpoint);
        _accepting = AcceptAsync(_stopping.Token);
    }

    /// <summary>Completes when the server stops accepting (only when disposed).</summary>
    public Task Completion => _accepting;

    private async Task AcceptAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var socket = await _listener.AcceptSocketAsync(cancellationToken);
                var task = ServeAsync(socket, cancellationToken);
                lock (_gate)
                {
                    _connections.RemoveAll(t => t.IsCompleted);
                    _connections.Add(task);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task ServeAsync(Socket socket, CancellationToken cancellationToken)
    {
        await Task.Yield();
        await using var connection = new NbdConnection(socket, _exports, _options, _logger);
        await connection.RunAsync(cancellationToken);
    }

    /// <summary>Stops accepting, cancels the connections and waits (bounded) for them to end.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _listener.Stop();
        await _accepting.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        Task[] running;
        lock (_gate)
        {
            running = [.. _connections];
        }
        await Task.WhenAll(running).WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stopping.Dispose();
    }
}
