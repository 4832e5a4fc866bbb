using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using OrleansStorage.Errors;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Security;

namespace OrleansStorage.Auth;

/// <summary>
/// A silo's side of client capabilities: the ticket key and authority it judges by, its own host
/// ticket, the principal of the call running now, and the count of refusals. Without the
/// cluster's certificates (a plain-text cluster on loopback) it is off and allows everything.
/// </summary>
public sealed partial class AccessControl
{
    private static readonly AsyncLocal<Principal?> CurrentCaller = new();

    private readonly string _hostId;
    private readonly TimeProvider _clock;
    private readonly ILogger _logger;
    private readonly LogRateLimiter _refusalLog = LogRateLimiter.ForRefusals();
    private byte[] _hostTicket = [];
    private DateTimeOffset _hostTicketRenewAt;
    private long _refused;

    /// <summary>Off: no ticket is asked for or checked.</summary>
    public AccessControl(ILogger<AccessControl> logger)
    {
        _hostId = "";
        _clock = TimeProvider.System;
        _logger = logger;
    }

    public AccessControl(TicketKey tickets, X509Certificate2 authority, string hostId, TimeProvider clock, ILogger<AccessControl> logger)
    {
        Tickets = tickets;
        Trust = new ClusterTrust(authority);
        _hostId = hostId;
        _clock = clock;
        _logger = logger;
    }

    public bool IsOn => Tickets is not null;

    /// <summary>Clients whose tickets from before a moment no longer count (<see cref="TicketRevocationFollower"/>).</summary>
    public TicketRevocations Revocations
    {
        get => Volatile.Read(ref _revocations);
        set => Volatile.Write(ref _revocations, value);
    }

    private TicketRevocations _revocations = TicketRevocations.None;

    /// <summary>The refusal for a client ticket issued before its grant changed; null for one that still counts (and for every host ticket).</summary>
    public TicketRevokedException? Revoked(Principal principal) =>
        !principal.IsHost && Revocations.Refusal(principal.Name, principal.Expires) is { } refusal
            ? new TicketRevokedException(refusal)
            : null;

    public TicketKey? Tickets { get; }

    public ClusterTrust? Trust { get; }

    /// <summary>Requests refused on this silo since it started.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>
    /// Who made the grain call running now (set by <see cref="AccessFilter"/>); null when access
    /// control is off, or for work the silo runs for itself (a grain's timer), which is trusted.
    /// </summary>
    public static Principal? Caller
    {
        get => CurrentCaller.Value;
        internal set => CurrentCaller.Value = value;
    }

    public DateTimeOffset Now => _clock.GetUtcNow();

    /// <summary>
    /// The ticket this host's own calls carry, resealed well before it expires. Without a lock:
    /// calls racing at the renewal reseal twice, and any ticket they read is valid for minutes.
    /// </summary>
    public byte[] HostTicket()
    {
        var now = Now;
        if (now >= _hostTicketRenewAt)
        {
            var expires = now + TicketGrant.Lifetime;
            _hostTicket = Tickets!.Seal(new Principal(_hostId, IsHost: true, expires, new ClientGrant(_hostId, [])));
            _hostTicketRenewAt = now + TicketGrant.Lifetime / 3;
        }
        return _hostTicket;
    }

    /// <summary>Refuses the running call unless its caller holds <paramref name="level"/> on <paramref name="volume"/>.</summary>
    public void Demand(VolumeInfo volume, CapabilityLevel level, string what)
    {
        if (IsOn && Caller is { } caller && !caller.Allows(level, volume.Name))
        {
            throw Refuse(caller.Denied($"{what} volume '{volume.Name}'"));
        }
    }

    /// <summary>Counts and logs (at a bounded rate) a refusal, and returns it to throw.</summary>
    public AccessDeniedException Refuse(AccessDeniedException refusal)
    {
        Interlocked.Increment(ref _refused);
        if (_refusalLog.TryEnter(out var suppressed))
        {
            Log.Refused(_logger, _hostId, refusal.Message, suppressed);
        }
        return refusal;
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "host {HostId} refused a request: {Refusal} ({Suppressed} more refusals not logged since the last)")]
        public static partial void Refused(ILogger logger, string hostId, string refusal, long suppressed);
    }
}
