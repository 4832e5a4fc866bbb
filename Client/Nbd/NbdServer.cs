using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using OrleansStorage.Client.Library;
using OrleansStorage.Logging;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// Exports OrleansStorage volumes over the NBD protocol to qemu, nbd-client, libnbd tools and fio.
/// Whatever clients do, it keeps serving the others: accept errors (descriptors exhausted) are
/// waited out, handshakes and sessions are capped apart (<see cref="NbdAdmission"/>), every phase has a deadline, and
/// all payload memory comes from one budget (docs/security.md, "The NBD server").
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    /// <summary>After an accept error (EMFILE, ENFILE, ENOBUFS) the next try waits this long, so the loop does not spin.</summary>
    private static readonly TimeSpan AcceptRetryDelay = TimeSpan.FromMilliseconds(100);

    /// <summary>The server gives its memory back this long after the last client left.</summary>
    private static readonly TimeSpan IdleBeforeGivingBackMemory = TimeSpan.FromSeconds(2);

    private readonly TcpListener _listener;
    private readonly NbdExports _exports;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly List<Task> _connections = [];
    private readonly NbdAdmission _admission;
    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _accepting = Task.CompletedTask;
    private long _lastClosed;
    private long _acceptErrors;
    private long _connectionsRefused;
    private long _requestsRejected;

    public NbdServer(OstorClient client, NbdServerOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _exports = new NbdExports(client, options.Exports);
        _admission = new NbdAdmission(options);
        _listener = new TcpListener(options.Listen);
        Memory = new NbdMemoryBudget(options.MemoryBudgetBytes, options.MaxRequestBytes);
        Refusals = LogRateLimiter.ForRefusals();
        Metrics = new NbdMetrics(this);
        Grants = new NbdGrantWatch(_exports.GrantOfAsync, options.GrantRecheckInterval, TimeProvider.System, logger);
    }

    public IPEndPoint LocalEndpoint => (IPEndPoint)_listener.LocalEndpoint;

    /// <summary>Connections open now.</summary>
    public int OpenConnections => _admission.Open;

    /// <summary>Accepts that failed (the server went on).</summary>
    public long AcceptErrors => Interlocked.Read(ref _acceptErrors);

    /// <summary>Connections closed by the caps: a handshake displaced by a newer one, or a finished handshake over the session caps.</summary>
    public long ConnectionsRefused => Interlocked.Read(ref _connectionsRefused);

    /// <summary>Options, requests and handshakes refused or failed, over all connections.</summary>
    public long RequestsRejected => Interlocked.Read(ref _requestsRejected);

    internal NbdMemoryBudget Memory { get; }

    internal NbdMetrics Metrics { get; }

    /// <summary>The grants of the clients with sessions open, kept current (revocation reaches open sessions).</summary>
    internal NbdGrantWatch Grants { get; }

    /// <summary>One rate for every line a client can cause at will: refusals, rejections, protocol violations.</summary>
    internal LogRateLimiter Refusals { get; }

    internal void CountRejected() => Interlocked.Increment(ref _requestsRejected);

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
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException ex)
            {
                // Out of descriptors or buffers: the waiting connection stays queued; try again shortly.
                await AcceptFailedAsync(ex.SocketErrorCode.ToString(), ex.Message, cancellationToken);
                continue;
            }
            if (DescriptorReserve.Holds(socket, out var limit))
            {
                // Kept, it would leave the runtime no descriptor to start a thread with, and the
                // process would end (DescriptorReserve): out of descriptors for clients, as above.
                socket.Close(0);
                await AcceptFailedAsync(nameof(SocketError.TooManyOpenSockets), $"only the last {DescriptorReserve.Size} descriptors below the limit of {limit} were free, and they are kept for the runtime: the connection is closed", cancellationToken);
                continue;
            }
            var task = ServeAsync(socket, Admit(socket), cancellationToken);
            lock (_gate)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(task);
            }
        }
    }

    private async Task AcceptFailedAsync(string error, string message, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _acceptErrors);
        if (Refusals.TryEnter(out var suppressed))
        {
            NbdLog.AcceptFailed(_logger, error, message, suppressed);
        }
        await Task.Delay(AcceptRetryDelay, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    /// <summary>Takes the connection into the handshake budget, closing the handshake it displaced, if any.</summary>
    private NbdAdmission.Slot Admit(Socket socket)
    {
        var slot = _admission.Admit(socket, (socket.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None, out var displaced);
        if (displaced is { } gone)
        {
            Refused(gone.Slot.Remote, gone.Reason);
            gone.Slot.Socket.Close(0); // its connection's read fails, and it ends
        }
        return slot;
    }

    /// <summary>A client finished its handshake: null if it may go on as a session, else why not (counted and logged).</summary>
    internal string? Establish(NbdAdmission.Slot slot)
    {
        var refusal = _admission.Establish(slot, out var displaced);
        if (refusal is not null && !displaced)
        {
            Refused(slot.Remote, refusal);
        }
        return refusal;
    }

    private void Refused(EndPoint? remote, string reason)
    {
        Interlocked.Increment(ref _connectionsRefused);
        if (Refusals.TryEnter(out var suppressed))
        {
            NbdLog.ConnectionRefused(_logger, remote, reason, suppressed);
        }
    }

    private async Task ServeAsync(Socket socket, NbdAdmission.Slot slot, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Yield();
            NbdConnection connection;
            try
            {
                connection = new NbdConnection(socket, slot, _exports, _options, this, _logger);
            }
            catch (ObjectDisposedException)
            {
                return; // displaced by a newer connection before it began
            }
            await using (connection)
            {
                await connection.RunAsync(cancellationToken);
            }
        }
        finally
        {
            var last = _admission.Release(slot);
            lock (_gate)
            {
                _lastClosed = Environment.TickCount64;
            }
            if (last && !cancellationToken.IsCancellationRequested)
            {
                _ = GiveBackMemoryWhenIdleAsync(cancellationToken);
            }
        }
    }

    /// <summary>Once no client has been connected for a moment, the burst's buffers go back to the system.</summary>
    private async Task GiveBackMemoryWhenIdleAsync(CancellationToken cancellationToken)
    {
        await Task.Delay(IdleBeforeGivingBackMemory, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        lock (_gate)
        {
            if (_admission.Open > 0 || Environment.TickCount64 - _lastClosed < IdleBeforeGivingBackMemory.TotalMilliseconds || cancellationToken.IsCancellationRequested)
            {
                return;
            }
        }
        // Outside the lock: a client arriving meanwhile rents from the new pool, whose sizes are the old one's.
        var before = Environment.WorkingSet;
        Memory.GiveBackMemory();
        var info = GC.GetGCMemoryInfo();
        NbdLog.MemoryGivenBack(_logger, before >> 20, Environment.WorkingSet >> 20, info.HeapSizeBytes >> 20, info.GenerationInfo[4].SizeAfterBytes >> 20, info.GenerationInfo[3].SizeAfterBytes >> 20, info.FragmentedBytes >> 20);
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
        await Grants.DisposeAsync();
        _stopping.Dispose();
        Metrics.Dispose();
    }
}
