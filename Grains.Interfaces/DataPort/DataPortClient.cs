using System.Collections.Concurrent;
using System.Diagnostics;
using OrleansStorage.Telemetry;

namespace OrleansStorage.DataPort;

/// <summary>
/// The data connections of one party (a client, or a primary forwarding to its replicas): a few
/// links per host endpoint, opened on first use and replaced when they fail, with requests spread
/// over them. A watchdog closes a link whose requests wait past <see cref="RequestTimeout"/>.
/// </summary>
public sealed class DataPortClient : IAsyncDisposable
{
    /// <summary>Links per host: enough that one TLS stream's encryption is not the limit, few enough to stay cheap.</summary>
    public const int LinksPerHost = 2;

    private readonly DataPortSecurity? _security;
    private readonly ConcurrentDictionary<string, HostLinks> _hosts = new(StringComparer.Ordinal);
    private readonly Timer _watchdog;

    public DataPortClient(DataPortSecurity? security, TimeSpan requestTimeout, TimeSpan connectTimeout)
    {
        _security = security;
        RequestTimeout = requestTimeout;
        ConnectTimeout = connectTimeout;
        _watchdog = new Timer(_ => CloseStuckLinks(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    public TimeSpan RequestTimeout { get; }

    public TimeSpan ConnectTimeout { get; }

    /// <summary>
    /// Sends one request to <paramref name="hostId"/>'s data port as <paramref name="map"/> gives
    /// it, carrying <see cref="RequestTimeout"/> (the server drops a write that waited past it);
    /// see <see cref="DataPortLink.SendAsync"/>.
    /// </summary>
    public Task<byte[]?> SendAsync(Maps.ClusterMap map, string hostId, DataRequestHeader request, ReadOnlyMemory<byte> payload = default, Memory<byte> readInto = default)
    {
        var endpoint = map.FindHost(hostId)?.DataEndpoint;
        if (string.IsNullOrEmpty(endpoint))
        {
            throw new Errors.HostUnavailableException(hostId, $"the map at epoch {map.Epoch} gives no data port for it");
        }
        return SendAsync(hostId, endpoint, request with { TimeoutMs = (uint)RequestTimeout.TotalMilliseconds }, payload, readInto);
    }

    /// <summary>Sends one request to the host at <paramref name="endpoint"/>; see <see cref="DataPortLink.SendAsync"/>.</summary>
    public async Task<byte[]?> SendAsync(string hostId, string endpoint, DataRequestHeader request, ReadOnlyMemory<byte> payload = default, Memory<byte> readInto = default)
    {
        // A span per request sent (a client's to a primary, a primary's forward to a replica),
        // whose context travels in the frame so the server's span joins the same trace.
        using var span = StorageTelemetry.StartSend(request, hostId);
        if (span is { Recorded: true })
        {
            request.Trace = span.Context;
        }
        try
        {
            var links = _hosts.GetOrAdd(endpoint, _ => new HostLinks());
            var link = await links.PickAsync(() => DataPortLink.ConnectAsync(hostId, endpoint, _security, ConnectTimeout));
            return await link.SendAsync(request, payload, readInto);
        }
        catch (Exception ex) when (span is not null)
        {
            span.SetStatus(ActivityStatusCode.Error, ex.Message);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _watchdog.DisposeAsync();
        foreach (var links in _hosts.Values)
        {
            await links.DisposeAsync();
        }
        _hosts.Clear();
    }

    private void CloseStuckLinks()
    {
        foreach (var links in _hosts.Values)
        {
            links.CloseIfStuck(RequestTimeout);
        }
    }

    /// <summary>The links to one endpoint; a slot is (re)connected by one caller while the others wait for it.</summary>
    private sealed class HostLinks : IAsyncDisposable
    {
        private readonly Task<DataPortLink>?[] _slots = new Task<DataPortLink>?[LinksPerHost];
        private readonly Lock _lock = new();
        private int _next;

        public Task<DataPortLink> PickAsync(Func<Task<DataPortLink>> connect)
        {
            lock (_lock)
            {
                var slot = _next++ % LinksPerHost;
                var link = _slots[slot];
                if (link is null || link.IsFaulted || link.IsCanceled || (link.IsCompletedSuccessfully && !link.Result.IsOpen))
                {
                    // A failed connect is not cached: the next request tries again (the host may be back).
                    link = _slots[slot] = connect();
                }
                return link;
            }
        }

        public void CloseIfStuck(TimeSpan limit)
        {
            lock (_lock)
            {
                foreach (var slot in _slots)
                {
                    if (slot is { IsCompletedSuccessfully: true })
                    {
                        slot.Result.CloseIfStuck(limit);
                    }
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            Task<DataPortLink>?[] slots;
            lock (_lock)
            {
                slots = [.. _slots];
                Array.Clear(_slots);
            }
            foreach (var slot in slots)
            {
                if (slot is null)
                {
                    continue;
                }
                await ((Task)slot).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                if (slot.IsCompletedSuccessfully)
                {
                    await slot.Result.DisposeAsync();
                }
            }
        }
    }
}
