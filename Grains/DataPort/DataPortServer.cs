using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansStorage.Auth;
using OrleansStorage.Errors;
using OrleansStorage.Hosting;
using OrleansStorage.Logging;
using OrleansStorage.Storage;
using OrleansStorage.Telemetry;

namespace OrleansStorage.DataPort;

/// <summary>
/// This host's data port: the fast door of its storage server for reads, writes, trims, flushes,
/// allocation queries and replica forwards (docs/data-protocol.md). It listens from silo start,
/// on the silo's address, so the port can be registered with the host; it serves requests only
/// while the storage server is active (<see cref="Open"/>), answering "unavailable" before and
/// after. Every request goes into the storage server's own methods, on its own scheduler, so
/// both doors admit by one code path.
/// </summary>
public sealed partial class DataPortServer(
    ILocalSiloDetails silo,
    IOptions<StorageServerOptions> options,
    AccessControl access,
    IGrainFactory grains,
    IServiceProvider services,
    DataPathMetrics metrics,
    ILogger<DataPortServer> logger) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private readonly LogRateLimiter _refusals = LogRateLimiter.ForRefusals();
    private readonly Lock _sessionsLock = new();
    private readonly HashSet<DataPortSession> _sessions = [];
    private Socket? _listener;
    private Task _accepting = Task.CompletedTask;
    private volatile IDataDoor? _door;
    private int _waking;

    /// <summary>Where clients reach this port ("address:port"); empty until the silo started it.</summary>
    public string Endpoint { get; private set; } = "";

    internal IDataDoor? Door => _door;

    internal AccessControl Access => access;

    internal DataPathMetrics Metrics => metrics;

    internal DataPortServerTls? Tls { get; } = services.GetService(typeof(DataPortServerTls)) as DataPortServerTls;

    internal string HostId => options.Value.HostId;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(DataPortServer), ServiceLifecycleStage.ApplicationServices, OnStartAsync, OnStopAsync);

    /// <summary>The storage server opens its door when it is active; requests before that are answered "unavailable".</summary>
    internal void Open(IDataDoor door) => _door = door;

    internal void Close(IDataDoor door) => Interlocked.CompareExchange(ref _door, null, door);

    /// <summary>
    /// The answer to a request that finds no storage server active. It also activates the storage
    /// server (one call at a time), as any grain call to it would: data requests alone must not find
    /// the door shut forever after it deactivated.
    /// </summary>
    internal HostUnavailableException Asleep()
    {
        if (Interlocked.CompareExchange(ref _waking, 1, 0) == 0)
        {
            _ = Task.Run(async () =>
            {
                try
                {
                    await grains.GetGrain<IStorageServerGrain>(HostId).GetStatusAsync();
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // It cannot activate now (the silo is stopping, the disk failed); the next request tries again.
                }
                finally
                {
                    Volatile.Write(ref _waking, 0);
                }
            });
        }
        return new HostUnavailableException(HostId, "its storage server is not active yet (or any more); retry shortly");
    }

    private Task OnStartAsync(CancellationToken cancellationToken)
    {
        var address = silo.SiloAddress.Endpoint.Address;
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(new IPEndPoint(address, options.Value.DataPort));
            listener.Listen(512);
        }
        catch (SocketException ex)
        {
            listener.Dispose();
            throw new InvalidOperationException($"the data port {address}:{options.Value.DataPort} cannot be opened: {ex.Message} (choose another with --data-port)", ex);
        }
        _listener = listener;
        Endpoint = ((IPEndPoint)listener.LocalEndPoint!).ToString();
        _accepting = Task.Run(AcceptAsync, CancellationToken.None);
        Log.Listening(logger, HostId, Endpoint, Tls is null ? "plain text" : "mutual TLS");
        return Task.CompletedTask;
    }

    private async Task OnStopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        _listener?.Dispose();
        await _accepting.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        DataPortSession[] sessions;
        lock (_sessionsLock)
        {
            sessions = [.. _sessions];
        }
        foreach (var session in sessions)
        {
            session.Abort();
        }
    }

    public void Dispose()
    {
        _listener?.Dispose();
        _stopping.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener!.AcceptAsync(_stopping.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                Log.AcceptFailed(logger, ex, HostId);
                continue;
            }
            socket.NoDelay = true;
            var session = new DataPortSession(this, socket);
            lock (_sessionsLock)
            {
                _sessions.Add(session);
            }
            _ = RunAsync(session);
        }
    }

    private async Task RunAsync(DataPortSession session)
    {
        try
        {
            await session.RunAsync(_stopping.Token);
        }
        finally
        {
            lock (_sessionsLock)
            {
                _sessions.Remove(session);
            }
        }
    }

    /// <summary>A connection closed for breaking the protocol or failing TLS: logged at a bounded rate, one line each.</summary>
    internal void Refused(string peer, string why)
    {
        if (_refusals.TryEnter(out var suppressed))
        {
            Log.ConnectionRefused(logger, HostId, peer, why, suppressed);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "host {HostId} serves data on {Endpoint} ({Security})")]
        public static partial void Listening(ILogger logger, string hostId, string endpoint, string security);

        [LoggerMessage(Level = LogLevel.Warning, Message = "host {HostId}: the data port failed to accept a connection")]
        public static partial void AcceptFailed(ILogger logger, Exception error, string hostId);

        [LoggerMessage(Level = LogLevel.Warning, Message = "host {HostId} closed a data connection from {Peer}: {Why} ({Suppressed} more not logged since the last)")]
        public static partial void ConnectionRefused(ILogger logger, string hostId, string peer, string why, long suppressed);
    }
}
