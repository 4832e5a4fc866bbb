using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Streams;
using OrleansStorage.Auth;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Storage;

namespace OrleansStorage.Client.Library;

/// <summary>One host as a client sees it: the map's view plus what its storage server reports.</summary>
public sealed record HostStatus(HostInfo Host, long MismatchReports, StorageServerStatus? Server, string? Error);

/// <summary>
/// The cluster at a glance: the management service, the map, every host with its storage server's
/// report, and every copy to a pending replica in progress.
/// </summary>
public sealed record ClusterStatus(ManagementStatus Management, ClusterMap Map, IReadOnlyList<HostStatus> Hosts)
{
    public IEnumerable<CopyProgress> Copies => Hosts.Where(h => h.Server is not null).SelectMany(h => h.Server!.Copies);

    /// <summary>Copies that finished (or failed) recently, as the primaries remember them.</summary>
    public IEnumerable<CopyProgress> FinishedCopies => Hosts.Where(h => h.Server is not null).SelectMany(h => h.Server!.FinishedCopies);

    /// <summary>Groups whose acting set is below the factor (a replica is Down, or one is being replaced).</summary>
    public int DegradedGroups => Map.AllGroups().Count(x => x.Group.IsDegraded(x.Volume.ReplicationFactor));

    /// <summary>Groups with a replica being filled or about to leave.</summary>
    public int RecoveringGroups => Map.AllGroups().Count(x => x.Group.IsMoving);

    /// <summary>Groups with no live replica at all: their I/O fails until a host returns.</summary>
    public int UnavailableGroups => Map.AllGroups().Count(x => !x.Group.IsAvailable);
}

/// <summary>
/// The .NET client of OrleansStorage: volume administration and volume I/O. Keeps the cluster
/// map current from the map stream (when subscribed) and from stale-epoch answers.
/// </summary>
public sealed partial class OstorClient : IAsyncDisposable
{
    private readonly IClusterClient _cluster;
    private readonly IHost? _ownedHost;
    private readonly OstorClientOptions _options;
    private readonly ClientTickets? _tickets;
    private StreamSubscriptionHandle<ClusterMap>? _subscription;

    private OstorClient(IClusterClient cluster, IHost? ownedHost, OstorClientOptions options, ClientTickets? tickets = null, ClientTls? tls = null)
    {
        _cluster = cluster;
        _ownedHost = ownedHost;
        _options = options;
        _tickets = tickets;
        var security = tls is null ? null : new DataPortSecurity(tls.Identity, tls.Trust, () => tickets?.Ticket);
        Data = new DataPortClient(security, options.RequestTimeout, options.ConnectTimeout < TimeSpan.FromSeconds(5) ? options.ConnectTimeout : TimeSpan.FromSeconds(5));
        Maps = new ClusterMapCache(() => ManagementAsync(m => m.GetMapAsync(), idempotent: true));
    }

    public ClusterMapCache Maps { get; }

    /// <summary>The connections to the hosts' data ports, which carry every read, write, trim and flush.</summary>
    internal DataPortClient Data { get; }

    /// <summary>Hosts holding this client's unflushed writes, per volume: shared by every handle, as NBD's multi-connection flush requires.</summary>
    internal UnflushedHosts Unflushed { get; } = new();

    public IClusterClient Cluster => _cluster;

    /// <summary>Connects to the cluster through the configured gateways.</summary>
    public static async Task<OstorClient> ConnectAsync(OstorClientOptions options, CancellationToken cancellationToken = default)
    {
        var gateways = options.Gateways.Select(ParseGateway).ToArray();
        var tls = options.PkiDirectory.Length > 0 ? ClientTls.Load(options.PkiDirectory, options.ClientName) : null;
        var tickets = tls is null ? null : new ClientTickets(tls.Identity, options.ClusterId);
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Logging.SetMinimumLevel(LogLevel.Critical);
        builder.UseOrleansClient(client =>
        {
            client.UseStaticClustering(gateways);
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = options.RequestTimeout);
            client.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = options.ClusterId;
                o.ServiceId = options.ServiceId;
            });
            if (options.SubscribeToMapChanges)
            {
                client.AddMemoryStreams(ClusterMapStream.ProviderName);
            }
            if (tls is not null)
            {
                tls.Configure(client);
                client.AddOutgoingGrainCallFilter(tickets!.AttachAsync);
            }
        });
        var host = builder.Build();
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(options.ConnectTimeout);
            await host.StartAsync(timeout.Token);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            host.Dispose();
            // A TLS mismatch looks like silence from here: the gateway drops the handshake and Orleans retries.
            var hint = options.PkiDirectory.Length == 0
                ? "; if its gateways use TLS, give the cluster's certificates (--pki or $OSTOR_PKI)"
                : $"; or the gateways refused client '{options.ClientName}' or are not hosts of the authority in {options.PkiDirectory}";
            throw new StorageException($"cannot reach the cluster at {string.Join(", ", options.Gateways)} ({ex.Message}){hint}", ex);
        }
        var client = new OstorClient(host.Services.GetRequiredService<IClusterClient>(), host, options, tickets, tls);
        try
        {
            if (tickets is not null)
            {
                await tickets.StartAsync(client._cluster, options.RetryTimeout);
            }
            await client.StartAsync();
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
        return client;
    }

    /// <summary>Wraps a cluster client someone else owns (tests, or a process hosting several parts).</summary>
    public static async Task<OstorClient> AttachAsync(IClusterClient cluster, OstorClientOptions? options = null)
    {
        var client = new OstorClient(cluster, null, options ?? new OstorClientOptions());
        await client.StartAsync();
        return client;
    }

    private async Task StartAsync()
    {
        if (_options.SubscribeToMapChanges)
        {
            var stream = _cluster.GetStreamProvider(ClusterMapStream.ProviderName)
                .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
            // A push only says that the map moved on: the map itself is pulled from the management
            // service, which hands out persisted maps only (docs/epoch-protocol.md).
            _subscription = await SubscribeAsync(stream, (map, _) =>
            {
                if (map.Epoch > Maps.Current.Epoch)
                {
                    TryRefreshAsync(map.Epoch).Ignore();
                }
                return Task.CompletedTask;
            });
        }
        await Maps.RefreshAsync();
    }

    /// <summary>
    /// Subscribes, trying again until the retry deadline: the subscription is stored in the
    /// cluster's database, whose first statement after a restart of PostgreSQL fails on a pooled
    /// connection the restart killed (the next one opens a fresh connection).
    /// </summary>
    private async Task<StreamSubscriptionHandle<ClusterMap>> SubscribeAsync(IAsyncStream<ClusterMap> stream, Func<ClusterMap, StreamSequenceToken?, Task> onNext)
    {
        var deadline = DateTime.UtcNow + _options.RetryTimeout;
        var delay = _options.RetryDelay;
        while (true)
        {
            try
            {
                return await stream.SubscribeAsync(onNext);
            }
            catch (Exception ex) when (DateTime.UtcNow < deadline && ex is not (StorageException or OperationCanceledException))
            {
                await Task.Delay(delay);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
            }
        }
    }

    private IManagementServiceGrain Management => _cluster.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey);

    /// <summary>
    /// Calls the management service, riding out its failover: a call that was never delivered
    /// (its silo is gone) is always tried again, and a read, or a change that is harmless to
    /// repeat, is tried again after any failure but a refusal, until the retry deadline. An
    /// activation that is unavailable (cut off from the database, or reloading) is not a refusal:
    /// each try goes out through the next gateway (the service is <c>[AnyGateway]</c>), so one
    /// that reaches the live activation answers.
    /// </summary>
    private Task<T> ManagementAsync<T>(Func<IManagementServiceGrain, Task<T>> call, bool idempotent) =>
        ServiceAsync(() => call(Management), ridesFailover: true, idempotent);

    /// <summary>
    /// One call to a cluster service (the management or the auth service), sent again with a
    /// fresh ticket when the hosts refuse this client's as revoked (refused before it ran, so even
    /// a change is safe to send again), and, when <paramref name="ridesFailover"/>, as
    /// <see cref="ManagementAsync"/> says.
    /// </summary>
    private async Task<T> ServiceAsync<T>(Func<Task<T>> call, bool ridesFailover, bool idempotent)
    {
        var deadline = DateTime.UtcNow + _options.RetryTimeout;
        var delay = _options.RetryDelay;
        var renewals = 0;
        while (true)
        {
            var ticket = _tickets?.Ticket;
            try
            {
                return await call();
            }
            catch (TicketRevokedException ex) when (DateTime.UtcNow < deadline)
            {
                if (await RenewRevokedTicketAsync(ex, ticket, ++renewals))
                {
                    continue;
                }
            }
            catch (Exception ex) when (ridesFailover && DateTime.UtcNow < deadline
                                       && (ex is OrleansMessageRejectionException
                                           || (idempotent && (ex is ManagementUnavailableException || ex is not (StorageException or OperationCanceledException)))))
            {
            }
            await Task.Delay(delay);
            delay = Backoff(delay);
        }
    }

    /// <summary>How many fresh tickets one request may ask for: more means the grant keeps changing under it.</summary>
    private const int MaxTicketRenewals = 3;

    /// <summary>
    /// A host refused <paramref name="refused"/> as issued before this client's grant changed:
    /// gets a fresh one. True when the request may go again at once; false when the auth
    /// service could not answer now (the caller waits and tries again). A removed grant, or a
    /// grant that keeps changing, ends the request with a refusal.
    /// </summary>
    private async Task<bool> RenewRevokedTicketAsync(TicketRevokedException revoked, byte[]? refused, int renewals)
    {
        if (_tickets is null)
        {
            throw revoked; // a client without tickets cannot be refused one: a host's bug, shown as it is
        }
        if (renewals > MaxTicketRenewals)
        {
            throw new AccessDeniedException($"client '{_options.ClientName}' got {MaxTicketRenewals} fresh tickets and each was refused as older than a change of its grant; it keeps changing ({revoked.Message})");
        }
        try
        {
            await _tickets.RenewNowAsync(_cluster, refused);
            return true;
        }
        catch (Exception ex) when (ex is not (AccessDeniedException or OperationCanceledException))
        {
            return false; // the auth service is moving or starting
        }
    }

    /// <summary>A call to the auth service, sent again with a fresh ticket when the hosts refuse this client's as revoked.</summary>
    private Task<T> AuthAsync<T>(Func<IAuthServiceGrain, Task<T>> call) => ServiceAsync(() => call(Auth), ridesFailover: false, idempotent: false);

    internal IStorageServerGrain StorageServer(string hostId) => _cluster.GetGrain<IStorageServerGrain>(hostId);

    /// <summary>Sends one data request to a host's data port, found in <paramref name="map"/>, bounded by <see cref="OstorClientOptions.RequestTimeout"/>.</summary>
    internal Task<byte[]?> SendDataAsync(ClusterMap map, string hostId, DataRequestHeader request, ReadOnlyMemory<byte> payload = default, Memory<byte> readInto = default) =>
        Data.SendAsync(map, hostId, request, payload, readInto);

    public async Task<VolumeInfo> CreateVolumeAsync(string name, long sizeBytes, int replicationFactor)
    {
        var volume = await ManagementAsync(m => m.CreateVolumeAsync(name, sizeBytes, replicationFactor), idempotent: false);
        await Maps.RefreshAsync();
        return volume;
    }

    public async Task<VolumeInfo> ResizeVolumeAsync(string name, long newSizeBytes)
    {
        var volume = await ManagementAsync(m => m.ResizeVolumeAsync(name, newSizeBytes), idempotent: false);
        await Maps.RefreshAsync();
        return volume;
    }

    /// <summary>Sets (replaces) a volume's QoS limits; <see cref="VolumeQos.Unlimited"/> lifts them.</summary>
    public async Task<VolumeInfo> SetVolumeQosAsync(string name, VolumeQos qos)
    {
        var volume = await ManagementAsync(m => m.SetVolumeQosAsync(name, qos), idempotent: true);
        await Maps.RefreshAsync();
        return volume;
    }

    /// <param name="withSnapshots">Delete the volume's snapshots with it; without, a volume that has any is refused.</param>
    public async Task DeleteVolumeAsync(string name, bool withSnapshots = false)
    {
        await ManagementAsync(async m =>
        {
            await m.DeleteVolumeAsync(name, withSnapshots);
            return true;
        }, idempotent: false);
        await Maps.RefreshAsync();
    }

    public async Task<ClusterMap> GetMapAsync() => await Maps.RefreshAsync();

    /// <summary>Opens a volume by name, or one of its snapshots, read-only, as <c>VOL@SNAP</c>.</summary>
    public async Task<VolumeHandle> OpenVolumeAsync(string name)
    {
        // Always the newest map: a client that held an old one (its pushes lost) would send its
        // first requests to where the volume used to live, and cost every host a mismatch.
        var map = await Maps.RefreshAsync();
        var at = name.IndexOf(VolumeHandle.SnapshotSeparator, StringComparison.Ordinal);
        var volume = map.FindVolume(at < 0 ? name : name[..at]) ?? throw new VolumeNotFoundException(at < 0 ? name : name[..at]);
        if (at < 0)
        {
            return new VolumeHandle(this, volume);
        }
        var snapshot = volume.FindSnapshot(name[(at + 1)..]) ?? throw new SnapshotNotFoundException(volume.Name, name[(at + 1)..]);
        return new VolumeHandle(this, volume, snapshot);
    }

    public async Task<ClusterStatus> GetStatusAsync()
    {
        var management = await ManagementAsync(m => m.GetStatusAsync(), idempotent: true);
        // A map the database has not confirmed is shown, never cached: the next request pulls a confirmed one.
        var map = management.UnconfirmedMap ?? await Maps.RefreshAsync(management.Epoch);
        return new ClusterStatus(management, map, await GetHostsAsync());
    }

    /// <summary>Starts moving every placement group off a host; see <see cref="GetStatusAsync"/> for progress.</summary>
    public async Task<ClusterMap> EvacuateHostAsync(string hostId)
    {
        var map = await ManagementAsync(m => m.EvacuateHostAsync(hostId), idempotent: true);
        Maps.Offer(map);
        return map;
    }

    public async Task<ClusterMap> RemoveHostAsync(string hostId)
    {
        var map = await ManagementAsync(m => m.RemoveHostAsync(hostId), idempotent: false);
        Maps.Offer(map);
        return map;
    }

    /// <summary>One rebalancing step; an unchanged epoch means balanced (or still moving the last step's data).</summary>
    public async Task<ClusterMap> RebalanceStepAsync()
    {
        var map = await ManagementAsync(m => m.RebalanceAsync(), idempotent: false);
        Maps.Offer(map);
        return map;
    }

    /// <summary>Rebuilds a lost map from the live hosts' disks; see <see cref="IManagementServiceGrain.RecoverMapAsync"/>.</summary>
    public async Task<MapRecoveryReport> RecoverMapAsync(int expectedHosts = 0)
    {
        var report = await ManagementAsync(m => m.RecoverMapAsync(expectedHosts), idempotent: false);
        Maps.Offer(report.Map);
        return report;
    }

    /// <summary>Every host in the map with its storage server's own report (or why it could not be had).</summary>
    public async Task<IReadOnlyList<HostStatus>> GetHostsAsync()
    {
        var hosts = await ManagementAsync(m => m.GetHostsAsync(), idempotent: true);
        var rows = await Task.WhenAll(hosts.Select(async h =>
        {
            if (h.Host.State is HostState.Down or HostState.Out)
            {
                return new HostStatus(h.Host, h.MismatchReports, null, h.Host.State.ToString().ToLowerInvariant());
            }
            try
            {
                var status = await StorageServer(h.Host.HostId).GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(10));
                return new HostStatus(h.Host, h.MismatchReports, status, null);
            }
            catch (Exception ex)
            {
                return new HostStatus(h.Host, h.MismatchReports, null, ex.Message);
            }
        }));
        return rows;
    }

    /// <summary>
    /// Runs <paramref name="operation"/> against the current map; on a stale epoch, a misdirected
    /// request, an unreachable host or any other failure but bad input, refreshes the map and tries
    /// again until <see cref="OstorClientOptions.RetryTimeout"/>.
    /// </summary>
    internal async Task RetryAsync(Func<ClusterMap, Task> operation, CancellationToken cancellationToken)
    {
        var renewals = 0;
        var delay = _options.RetryDelay;
        var deadline = DateTime.UtcNow + _options.RetryTimeout;
        for (var attempt = 1; ; attempt++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var map = Maps.Current;
            var ticket = _tickets?.Ticket;
            Exception failure;
            try
            {
                await operation(map);
                return;
            }
            catch (TicketRevokedException ex)
            {
                // Refused before anything was done: a fresh ticket carries the grant as it is now.
                failure = ex;
                if (await RenewRevokedTicketAsync(ex, ticket, ++renewals))
                {
                    continue;
                }
            }
            catch (StaleEpochException ex)
            {
                failure = ex;
                if (await CatchUpAsync(ex.ServerEpoch, ex.HostId) && attempt < 3)
                {
                    continue; // a fresh map is usually all it takes: retry at once
                }
            }
            catch (VolumeThrottledException ex)
            {
                // The volume's QoS limit: the map is fine, only wait as long as the host says.
                if (DateTime.UtcNow >= deadline)
                {
                    throw new StorageException($"gave up after {attempt} attempts in {_options.RetryTimeout.TotalSeconds:0} s: {ex.Message}", ex);
                }
                await Task.Delay(TimeSpan.FromTicks(Math.Clamp(ex.RetryAfter.Ticks, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond)), cancellationToken);
                continue;
            }
            catch (Exception ex) when (ex is not (InvalidRequestException or VolumeNotFoundException or DataCorruptException or AccessDeniedException or OperationCanceledException))
            {
                // A host or the management service may be failing over: anything but bad input, a
                // refusal, or data no replica holds a good copy of is worth another try on a fresh
                // map until the deadline.
                failure = ex;
                await TryRefreshAsync(map.Epoch + 1);
            }
            if (DateTime.UtcNow >= deadline)
            {
                throw new StorageException($"gave up after {attempt} attempts in {_options.RetryTimeout.TotalSeconds:0} s: {failure.Message}", failure);
            }
            await Task.Delay(delay, cancellationToken);
            delay = Backoff(delay);
        }
    }

    /// <summary>The next pause between attempts: doubling, at most a second.</summary>
    internal static TimeSpan Backoff(TimeSpan delay) => TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.TicksPerSecond));

    /// <summary>Refreshes the map; false if the management service cannot be reached right now (it may be failing over).</summary>
    private async Task<bool> TryRefreshAsync(long atLeastEpoch)
    {
        try
        {
            await Maps.RefreshAsync(atLeastEpoch);
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return false;
        }
    }

    private IAuthServiceGrain Auth => _cluster.GetGrain<IAuthServiceGrain>(IAuthServiceGrain.DefaultKey);

    /// <summary>Every client with a grant, by name.</summary>
    public Task<ClientGrant[]> ListClientsAsync() => AuthAsync(a => a.ListAsync());

    /// <summary>Gives a client with no grant yet these capabilities.</summary>
    public Task<ClientGrant> AddClientAsync(string client, IEnumerable<Capability> capabilities) => AuthAsync(a => a.AddAsync(client, [.. capabilities]));

    /// <summary>Replaces a client's capabilities; the hosts refuse its current ticket within seconds, and its next one carries the new ones.</summary>
    public Task<ClientGrant> SetClientCapabilitiesAsync(string client, IEnumerable<Capability> capabilities) => AuthAsync(a => a.SetCapabilitiesAsync(client, [.. capabilities]));

    /// <summary>A client's grant, or null.</summary>
    public Task<ClientGrant?> GetClientAsync(string client) => AuthAsync(a => a.GetAsync(client));

    public Task RemoveClientAsync(string client) => AuthAsync(async a =>
    {
        await a.RemoveAsync(client);
        return true;
    });

    /// <summary>What this client may do, as its ticket says; null on a cluster without TLS (everything).</summary>
    public ClientGrant? Grant => _tickets?.Grant;

    public async ValueTask DisposeAsync()
    {
        await StopWatchingWritesAsync();
        await Data.DisposeAsync();
        if (_tickets is not null)
        {
            await _tickets.DisposeAsync();
        }
        if (_subscription is not null)
        {
            try
            {
                await _subscription.UnsubscribeAsync();
            }
            catch (Exception)
            {
                // The cluster may already be gone; the subscription dies with it.
            }
        }
        if (_ownedHost is not null)
        {
            await _ownedHost.StopAsync();
            _ownedHost.Dispose();
        }
    }

    private static IPEndPoint ParseGateway(string gateway)
    {
        var colon = gateway.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(gateway.AsSpan(colon + 1), out var port) || port is < 1 or > 65535)
        {
            throw new InvalidRequestException($"gateway '{gateway}' is not host:port");
        }
        var hostPart = gateway[..colon].Trim('[', ']');
        if (IPAddress.TryParse(hostPart, out var address))
        {
            return new IPEndPoint(address, port);
        }
        var resolved = Dns.GetHostAddresses(hostPart);
        var ip = resolved.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? resolved.FirstOrDefault()
            ?? throw new InvalidRequestException($"gateway host '{hostPart}' does not resolve");
        return new IPEndPoint(ip, port);
    }
}
