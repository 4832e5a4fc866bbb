using System.Security.Cryptography.X509Certificates;
using OrleansStorage.Auth;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Library;

/// <summary>
/// A client's ticket: asked for with a proof of its certificate's key once connected, put on
/// every call it sends, and renewed at a third of its lifetime (sooner after a failed renewal),
/// so that a long-running client (an NBD export) never holds an expired one.
/// </summary>
internal sealed class ClientTickets(X509Certificate2 identity, string clusterId) : IAsyncDisposable
{
    private static readonly TimeSpan RetryAfterFailure = TimeSpan.FromSeconds(5);

    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private volatile TicketGrant? _current;
    private Task? _renewing;
    private Task? _renewingNow;

    /// <summary>The grant the current ticket carries; null before the first ticket.</summary>
    public ClientGrant? Grant => _current?.Grant;

    /// <summary>The current sealed ticket (a new array after each renewal); null before the first.</summary>
    public byte[]? Ticket => _current?.Ticket;

    /// <summary>Puts the current ticket (if any yet) on an outgoing call; async, so the caller's own request context stays as it was.</summary>
    public async Task AttachAsync(IOutgoingGrainCallContext context)
    {
        if (_current is { } ticket)
        {
            RequestContext.Set(TicketGrant.RequestContextKey, ticket.Ticket);
        }
        await context.Invoke();
    }

    /// <summary>
    /// Gets the first ticket and keeps it renewed. A refusal is the caller's error at once; a
    /// failure to reach the auth service (its silo just died, it is moving, the gateway is cut off
    /// from it and the request timed out) is tried again until <paramref name="retryTimeout"/>, as
    /// every idempotent call to the management service is; each try goes out through the next
    /// gateway (the auth service is <c>[AnyGateway]</c>).
    /// </summary>
    public async Task StartAsync(IClusterClient cluster, TimeSpan retryTimeout)
    {
        var deadline = DateTime.UtcNow + retryTimeout;
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            try
            {
                _current = await IssueAsync(cluster);
                break;
            }
            catch (Exception ex) when (ex is not (StorageException or OperationCanceledException) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(delay);
                delay = OstorClient.Backoff(delay);
            }
        }
        _renewing = RenewAsync(cluster);
    }

    /// <summary>
    /// A host refused <paramref name="refused"/> as issued before the client's grant changed: gets
    /// a fresh ticket now, once for every request that met the same refusal. A removed grant
    /// throws the auth service's refusal.
    /// </summary>
    public Task RenewNowAsync(IClusterClient cluster, byte[]? refused)
    {
        lock (_gate)
        {
            if (refused is not null && !ReferenceEquals(_current?.Ticket, refused))
            {
                return Task.CompletedTask; // renewed since that request was sent
            }
            if (_renewingNow is { IsCompleted: false } renewing)
            {
                return renewing;
            }
            return _renewingNow = RenewOnceAsync(cluster);
        }
    }

    private async Task RenewOnceAsync(IClusterClient cluster) => Adopt(await IssueAsync(cluster));

    /// <summary>
    /// Takes <paramref name="ticket"/> unless the current one expires later: a periodic renewal
    /// answered after a renewal on refusal must not bring back a ticket issued before the change.
    /// </summary>
    private void Adopt(TicketGrant ticket)
    {
        lock (_gate)
        {
            if (_current is null || ticket.Expires >= _current.Expires)
            {
                _current = ticket;
            }
        }
    }

    private Task<TicketGrant> IssueAsync(IClusterClient cluster) =>
        cluster.GetGrain<IAuthServiceGrain>(IAuthServiceGrain.DefaultKey).IssueTicketAsync(TicketProof.Sign(identity, clusterId, DateTimeOffset.UtcNow));

    private async Task RenewAsync(IClusterClient cluster)
    {
        var wait = TicketGrant.Lifetime / 3;
        while (!_stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(wait, _stopping.Token);
                Adopt(await IssueAsync(cluster));
                wait = TicketGrant.Lifetime / 3;
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is StorageException or OrleansException or TimeoutException)
            {
                // The management silo may be failing over; a removed grant shows when the hosts refuse the ticket.
                wait = RetryAfterFailure;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        if (_renewing is not null)
        {
            await _renewing;
        }
        _stopping.Dispose();
    }
}
