using Microsoft.Extensions.Logging;
using OrleansStorage.Auth;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// The grants of the TLS clients that have sessions open, looked up again every
/// <see cref="NbdServerOptions.GrantRecheckInterval"/>: a grant removed or narrowed with
/// <c>ostor auth</c> reaches the sessions already open within that interval, not only the next
/// connection (issue 29, item 2; docs/security.md, "Changing a grant"). One lookup per client
/// name per interval, however many sessions the client has. A lookup that fails keeps the grant
/// last seen, until none has succeeded for a ticket's lifetime: then the client is treated as
/// having no grant, as the cluster itself would by then (its tickets have expired).
/// </summary>
internal sealed class NbdGrantWatch : IAsyncDisposable
{
    /// <summary>A lookup that takes longer counts as failed (the grant last seen is kept).</summary>
    private static readonly TimeSpan LookupTimeout = TimeSpan.FromSeconds(10);

    private readonly Func<string, Task<ClientGrant?>> _lookUp;
    private readonly TimeSpan _interval;
    private readonly TimeProvider _clock;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Watched> _watched = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private Task _checking = Task.CompletedTask;

    /// <summary>Whether the loop runs (it stops when no session is watched): changed under the gate, so a new session never finds it just ending.</summary>
    private bool _running;

    public NbdGrantWatch(Func<string, Task<ClientGrant?>> lookUp, TimeSpan interval, TimeProvider clock, ILogger logger)
    {
        _lookUp = lookUp;
        _interval = interval;
        _clock = clock;
        _logger = logger;
    }

    /// <summary>One client's grant as last looked up, shared by its sessions.</summary>
    public sealed class Watched
    {
        private volatile ClientGrant _grant;

        internal Watched(string client, ClientGrant grant, long seenAt)
        {
            Client = client;
            _grant = grant;
            SeenAt = seenAt;
        }

        public string Client { get; }

        public ClientGrant Grant => _grant;

        /// <summary>Raised, on the watch's loop, when a lookup found the grant different.</summary>
        public event Action<ClientGrant>? Changed;

        internal int Sessions { get; set; }

        /// <summary>When a lookup last answered (a timestamp of the watch's clock).</summary>
        internal long SeenAt { get; set; }

        internal void Set(ClientGrant grant)
        {
            if (SameRights(grant, _grant))
            {
                return;
            }
            _grant = grant;
            foreach (var handler in Changed?.GetInvocationList() ?? [])
            {
                try
                {
                    ((Action<ClientGrant>)handler)(grant);
                }
                catch (Exception ex)
                {
                    // One session's failure must not keep the change from the others, nor stop the watch.
                    ChangedFailed?.Invoke(ex);
                }
            }
        }

        internal Action<Exception>? ChangedFailed { get; set; }

        private static bool SameRights(ClientGrant a, ClientGrant b) =>
            a.Capabilities.ToHashSet().SetEquals(b.Capabilities);
    }

    /// <summary>Starts watching <paramref name="grant"/>'s client for a session; end it with <see cref="Unwatch"/>.</summary>
    public Watched Watch(ClientGrant grant)
    {
        Watched watched;
        var fresher = false;
        lock (_gate)
        {
            if (!_watched.TryGetValue(grant.Client, out watched!))
            {
                watched = new Watched(grant.Client, grant, _clock.GetTimestamp()) { ChangedFailed = ex => NbdLog.GrantChangeFailed(_logger, grant.Client, ex.Message) };
                _watched[grant.Client] = watched;
            }
            else
            {
                // The grant this session's handshake just read is newer than the last lookup's.
                watched.SeenAt = _clock.GetTimestamp();
                fresher = true;
            }
            watched.Sessions++;
            if (!_running && !_stopping.IsCancellationRequested)
            {
                _running = true;
                _checking = CheckAsync(_stopping.Token);
            }
        }
        if (fresher)
        {
            watched.Set(grant); // outside the gate: it tells the other sessions
        }
        return watched;
    }

    public void Unwatch(Watched watched)
    {
        lock (_gate)
        {
            if (--watched.Sessions == 0)
            {
                _watched.Remove(watched.Client);
            }
        }
    }

    private async Task CheckAsync(CancellationToken stopping)
    {
        using var timer = new PeriodicTimer(_interval, _clock);
        try
        {
            while (await timer.WaitForNextTickAsync(stopping) && await CheckOnceAsync())
            {
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    /// <summary>Looks up every watched client's grant once; false (and the loop stops) when nobody is watched.</summary>
    internal async Task<bool> CheckOnceAsync()
    {
        Watched[] watched;
        lock (_gate)
        {
            if (_watched.Count == 0)
            {
                _running = false; // started again by the next session
                return false;
            }
            watched = [.. _watched.Values];
        }
        // Side by side and bounded: one client's slow lookup must not hold back another's revocation.
        await Task.WhenAll(watched.Select(LookUpAsync));
        return true;
    }

    private async Task LookUpAsync(Watched watched)
    {
        ClientGrant? grant;
        try
        {
            grant = await _lookUp(watched.Client).WaitAsync(LookupTimeout, _clock);
        }
        catch (Exception ex)
        {
            var unseenFor = _clock.GetElapsedTime(watched.SeenAt);
            if (unseenFor < TicketGrant.Lifetime)
            {
                NbdLog.GrantLookupFailed(_logger, watched.Client, ex.Message, unseenFor.TotalSeconds);
                return;
            }
            // Unconfirmed for as long as a ticket lasts: the cluster would refuse it by now too.
            grant = new ClientGrant(watched.Client, []);
        }
        if (grant is not null)
        {
            watched.SeenAt = _clock.GetTimestamp();
            watched.Set(grant);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        await _checking;
        _stopping.Dispose();
    }
}
