using System.Security.Cryptography.X509Certificates;

namespace OrleansStorage.Security;

/// <summary>
/// Decides whether a peer's certificate belongs to this cluster: it chains to the cluster's
/// authority alone (the system's trusted roots count for nothing: a certificate a public CA
/// issued is a stranger here), it is within its validity, and it was issued for the role the
/// connection needs.
/// </summary>
public sealed class ClusterTrust(X509Certificate2 authority)
{
    public X509Certificate2 Authority { get; } = authority;

    /// <summary>Null when <paramref name="certificate"/> may connect as one of <paramref name="roles"/>, else why not.</summary>
    public string? Refusal(X509Certificate2? certificate, params CertificateRole[] roles)
    {
        if (certificate is null)
        {
            return "no certificate was presented";
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(Authority);
        // Revocation is by expiry and by changing the authority (docs/security.md): there is no CRL to ask.
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        if (!chain.Build(certificate))
        {
            var status = string.Join(", ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct());
            return $"certificate '{certificate.Subject}' is not one of this cluster's ({status})";
        }
        if (!chain.ChainElements[^1].Certificate.RawDataMemory.Span.SequenceEqual(Authority.RawDataMemory.Span))
        {
            return $"certificate '{certificate.Subject}' does not chain to this cluster's authority";
        }
        var role = ClusterCertificates.RoleOf(certificate);
        if (role is null || !roles.Contains(role.Value))
        {
            return $"certificate '{certificate.Subject}' is a {role?.ToString().ToLowerInvariant() ?? "no-role"} certificate; this connection takes {string.Join(" or ", roles.Select(r => r.ToString().ToLowerInvariant()))} certificates";
        }
        return null;
    }
}
