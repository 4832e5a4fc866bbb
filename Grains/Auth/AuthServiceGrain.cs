using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Storage;
using OrleansStorage.Errors;
using OrleansStorage.Security;

namespace OrleansStorage.Auth;

/// <summary>What the auth service persists in PostgreSQL: every client's grant.</summary>
[GenerateSerializer, Alias("ostor.AuthState")]
public sealed class AuthState
{
    [Id(0)] public Dictionary<string, Capability[]> Grants { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Clients whose grant changed or went within a ticket's lifetime, and since when their older tickets no longer count.</summary>
    [Id(1)] public Dictionary<string, DateTimeOffset> RevokedBefore { get; set; } = new(StringComparer.Ordinal);
}

/// <summary>
/// The register of client grants and the issuer of tickets. Grants live in the cluster's grain
/// storage beside the map; a register that was never written starts with
/// <see cref="ClientGrant.BootstrapAdmin"/> as administrator of everything, so the cluster's first
/// client can give out the rest. Not reentrant: changes are written one at a time.
/// </summary>
[GrainType("ostor-auth")]
public sealed partial class AuthServiceGrain(
    AccessControl access,
    IOptions<ClusterOptions> clusterOptions,
    ILogger<AuthServiceGrain> logger) : Grain, IAuthServiceGrain
{
    private const string StateName = "grants";

    private IGrainStorage _storage = null!;
    private readonly GrainState<AuthState> _state = new(new AuthState());

    private Dictionary<string, Capability[]> Grants => _state.State!.Grants;

    private Dictionary<string, DateTimeOffset> RevokedBefore => _state.State!.RevokedBefore ??= new(StringComparer.Ordinal);

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _storage = ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.ClusterStore);
        await _storage.ReadStateAsync(StateName, this.GetGrainId(), _state);
        _state.State ??= new AuthState();
        if (!_state.RecordExists)
        {
            Grants[ClientGrant.BootstrapAdmin] = [Capability.ClusterAdmin];
            await _storage.WriteStateAsync(StateName, this.GetGrainId(), _state);
        }
    }

    public Task<TicketGrant> IssueTicketAsync(TicketRequest request)
    {
        if (!access.IsOn)
        {
            throw new InvalidRequestException("this cluster runs without TLS (no --pki): it issues no tickets and checks none");
        }
        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadCertificate(request.Certificate);
        }
        catch (CryptographicException)
        {
            throw access.Refuse(new AccessDeniedException("the ticket request's certificate is not a certificate"));
        }
        using (certificate)
        {
            var name = ClusterCertificates.NameOf(certificate);
            if (access.Trust!.Refusal(certificate, CertificateRole.Client) is { } untrusted)
            {
                throw access.Refuse(new AccessDeniedException($"no ticket for '{name}': {untrusted}"));
            }
            if (TicketProof.Refusal(request, certificate, clusterOptions.Value.ClusterId, access.Now) is { } unproven)
            {
                throw access.Refuse(new AccessDeniedException($"no ticket for client '{name}': {unproven}"));
            }
            if (!Grants.TryGetValue(name, out var capabilities))
            {
                throw access.Refuse(new AccessDeniedException($"client '{name}' has no grant; an administrator gives it one with 'ostor auth add {name} LEVEL:PATTERN' (e.g. ro:*)"));
            }
            var grant = new ClientGrant(name, capabilities);
            // Never issued before the client's last revocation: the hosts refuse tickets from before it.
            var expires = TicketRevocations.IssuedAt(access.Now, RevokedBefore.TryGetValue(name, out var before) ? before : null) + TicketGrant.Lifetime;
            Log.TicketIssued(logger, name, Capability.Format(capabilities), expires);
            return Task.FromResult(new TicketGrant(access.Tickets!.Seal(new Principal(name, IsHost: false, expires, grant)), expires, grant));
        }
    }

    public Task<ClientGrant[]> ListAsync() =>
        Task.FromResult(Grants.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => new ClientGrant(g.Key, g.Value)).ToArray());

    public Task<TicketRevocations> GetRevocationsAsync()
    {
        var now = access.Now;
        return Task.FromResult(new TicketRevocations(RevokedBefore.Where(r => r.Value + TicketRevocations.KeptFor > now).ToDictionary(StringComparer.Ordinal)));
    }

    public Task<ClientGrant?> GetAsync(string client) =>
        Task.FromResult(Grants.TryGetValue(client, out var capabilities) ? new ClientGrant(client, capabilities) : null);

    public async Task<ClientGrant> AddAsync(string client, Capability[] capabilities)
    {
        var checkedCapabilities = Checked(client, capabilities);
        if (Grants.TryGetValue(client, out var existing))
        {
            throw new InvalidRequestException($"client '{client}' already has a grant ({Capability.Format(existing)}); change it with 'ostor auth caps {client} ...'");
        }
        return await SaveAsync(client, checkedCapabilities);
    }

    public async Task<ClientGrant> SetCapabilitiesAsync(string client, Capability[] capabilities)
    {
        var checkedCapabilities = Checked(client, capabilities);
        if (!Grants.ContainsKey(client))
        {
            throw new InvalidRequestException($"client '{client}' has no grant; give it one with 'ostor auth add {client} ...'");
        }
        return await SaveAsync(client, checkedCapabilities);
    }

    public async Task RemoveAsync(string client)
    {
        if (!Grants.ContainsKey(client))
        {
            throw new InvalidRequestException($"client '{client}' has no grant");
        }
        if (Lockout(client, []) is { } lockout)
        {
            throw new InvalidRequestException(lockout);
        }
        var before = Snapshot();
        Grants.Remove(client);
        Revoke(client);
        await WriteAsync(before);
        Log.GrantChanged(logger, client, "removed");
    }

    private async Task<ClientGrant> SaveAsync(string client, Capability[] capabilities)
    {
        if (Lockout(client, capabilities) is { } lockout)
        {
            throw new InvalidRequestException(lockout);
        }
        var before = Snapshot();
        if (Grants.ContainsKey(client))
        {
            Revoke(client);
        }
        Grants[client] = capabilities;
        await WriteAsync(before);
        Log.GrantChanged(logger, client, Capability.Format(capabilities));
        return new ClientGrant(client, capabilities);
    }

    private AuthState Snapshot() => new()
    {
        Grants = new Dictionary<string, Capability[]>(Grants, StringComparer.Ordinal),
        RevokedBefore = new Dictionary<string, DateTimeOffset>(RevokedBefore, StringComparer.Ordinal),
    };

    /// <summary>
    /// The client's tickets issued until now no longer count on any host (once it has asked for
    /// the revocations, within seconds): the next one carries the grant as it is now. Whole
    /// seconds, rounded up, as tickets carry their expiry; entries older than a ticket's
    /// lifetime (and a margin for hosts' clocks) are dropped: every ticket from before them has expired.
    /// </summary>
    private void Revoke(string client)
    {
        var now = access.Now;
        foreach (var old in RevokedBefore.Where(r => r.Value + TicketRevocations.KeptFor <= now).Select(r => r.Key).ToList())
        {
            RevokedBefore.Remove(old);
        }
        RevokedBefore[client] = TicketRevocations.RevokedBeforeFor(now);
    }

    /// <summary>A failed write leaves the register as PostgreSQL has it.</summary>
    private async Task WriteAsync(AuthState before)
    {
        try
        {
            await _storage.WriteStateAsync(StateName, this.GetGrainId(), _state);
        }
        catch
        {
            _state.State = before;
            DeactivateOnIdle();
            throw;
        }
    }

    /// <summary>The last administrator of everything cannot give that up: nobody could give it back.</summary>
    private string? Lockout(string client, Capability[] capabilities)
    {
        var remainingAdmins = Grants
            .Where(g => g.Key != client)
            .Count(g => new ClientGrant(g.Key, g.Value).IsClusterAdmin);
        return remainingAdmins == 0 && !new ClientGrant(client, capabilities).IsClusterAdmin
            ? $"client '{client}' is the last one with admin:*; give another client admin:* first"
            : null;
    }

    private static Capability[] Checked(string client, Capability[] capabilities)
    {
        PkiDirectory.CheckedName(client);
        if (capabilities.Length == 0)
        {
            throw new InvalidRequestException("give at least one capability (LEVEL:PATTERN, e.g. ro:*); to take every right away use 'ostor auth remove'");
        }
        // Parse again what came over the wire: a caller of the grain may not have used Capability.Parse.
        return [.. capabilities.Select(c => Capability.Parse(c.ToString())).Distinct()];
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "issued a ticket to client '{Client}' ({Capabilities}) until {Expires:u}")]
        public static partial void TicketIssued(ILogger logger, string client, string capabilities, DateTimeOffset expires);

        [LoggerMessage(Level = LogLevel.Information, Message = "client '{Client}': {Change}")]
        public static partial void GrantChanged(ILogger logger, string client, string change);
    }
}
