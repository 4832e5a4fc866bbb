namespace OrleansStorage.Auth;

/// <summary>
/// The management service's register of clients (key <see cref="DefaultKey"/>): what each client
/// may do, persisted in PostgreSQL beside the map, and the tickets that carry it to every host.
/// A client proves it holds its certificate's key and gets a short-lived ticket naming its
/// capabilities; every request carries the ticket and every silo checks it (docs/security.md).
/// </summary>
[Alias("ostor.IAuthServiceGrain")]
public interface IAuthServiceGrain : IGrainWithStringKey
{
    public const string DefaultKey = "default";

    /// <summary>
    /// A ticket for the client whose certificate <paramref name="request"/> carries and signs.
    /// Refused for a certificate of another authority, a stale or bad signature, or a client
    /// with no grant.
    /// </summary>
    [Alias("IssueTicket")]
    [Requires(Access.Anyone)]
    [Management.AnyGateway]
    Task<TicketGrant> IssueTicketAsync(TicketRequest request);

    [Alias("List")]
    [Requires(Access.ClusterAdmin)]
    Task<ClientGrant[]> ListAsync();

    /// <summary>A client's grant; null when it has none.</summary>
    [Alias("Get")]
    [Requires(Access.ClusterAdmin)]
    Task<ClientGrant?> GetAsync(string client);

    /// <summary>Gives a new client capabilities; refused if it has a grant already (change it with <see cref="SetCapabilitiesAsync"/>).</summary>
    [Alias("Add")]
    [Requires(Access.ClusterAdmin)]
    Task<ClientGrant> AddAsync(string client, Capability[] capabilities);

    /// <summary>Replaces a client's capabilities; refused for a client without a grant.</summary>
    [Alias("SetCapabilities")]
    [Requires(Access.ClusterAdmin)]
    Task<ClientGrant> SetCapabilitiesAsync(string client, Capability[] capabilities);

    /// <summary>Takes a client's grant away: it gets no new ticket, and the hosts refuse the ones it holds within seconds (<see cref="GetRevocationsAsync"/>).</summary>
    [Alias("Remove")]
    [Requires(Access.ClusterAdmin)]
    Task RemoveAsync(string client);

    /// <summary>
    /// For each client whose grant changed or was removed within a ticket's lifetime, the moment
    /// before which its tickets no longer count (every host asks every few seconds).
    /// </summary>
    [Alias("GetRevocations")]
    [Requires(Access.Host)]
    Task<TicketRevocations> GetRevocationsAsync();
}

/// <summary>Tickets issued to a client before its entry are refused; a fresh one carries the grant as it is now.</summary>
[GenerateSerializer, Immutable, Alias("ostor.TicketRevocations")]
public sealed record TicketRevocations([property: Id(0)] Dictionary<string, DateTimeOffset> IssuedBefore)
{
    public static readonly TicketRevocations None = new(new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal));

    /// <summary>
    /// How long an entry is kept: a ticket's lifetime, plus a margin for a host whose clock runs
    /// behind the auth service's (it would still take the tickets the entry refuses).
    /// </summary>
    public static readonly TimeSpan KeptFor = TicketGrant.Lifetime + TimeSpan.FromMinutes(1);

    /// <summary>The entry for a grant changed at <paramref name="now"/>: the next whole second, since tickets carry their expiry in whole seconds, rounded down.</summary>
    public static DateTimeOffset RevokedBeforeFor(DateTimeOffset now) => DateTimeOffset.FromUnixTimeSeconds(now.ToUnixTimeSeconds() + 1);

    /// <summary>When a ticket issued at <paramref name="now"/> counts from: never before the client's entry, so that a fresh ticket is never refused.</summary>
    public static DateTimeOffset IssuedAt(DateTimeOffset now, DateTimeOffset? revokedBefore) => revokedBefore is { } before && before > now ? before : now;

    /// <summary>Why a ticket of <paramref name="client"/> that expires at <paramref name="expires"/> no longer counts; null if it does.</summary>
    public string? Refusal(string client, DateTimeOffset expires) =>
        IssuedBefore.TryGetValue(client, out var before) && expires - TicketGrant.Lifetime < before
            ? $"the ticket of client '{client}' was issued before its grant changed at {before:u}; get a fresh one"
            : null;
}

/// <summary>
/// A client's proof that it holds its certificate's private key: an ECDSA signature over
/// <see cref="TicketProof.SignedText"/>, fresh within a few minutes.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.TicketRequest")]
public sealed record TicketRequest(
    [property: Id(0)] byte[] Certificate,
    [property: Id(1)] long UnixSeconds,
    [property: Id(2)] byte[] Nonce,
    [property: Id(3)] byte[] Signature);

/// <summary>A ticket (opaque to the client: every request carries it) and what it grants, until when.</summary>
[GenerateSerializer, Immutable, Alias("ostor.TicketGrant")]
public sealed record TicketGrant(
    [property: Id(0)] byte[] Ticket,
    [property: Id(1)] DateTimeOffset Expires,
    [property: Id(2)] ClientGrant Grant)
{
    /// <summary>
    /// How long a ticket is good for: how long a removed or narrowed grant may still be used.
    /// Clients renew at a third of it.
    /// </summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromMinutes(5);

    /// <summary>The RequestContext key every request's ticket travels under.</summary>
    public const string RequestContextKey = "ostor-ticket";
}
