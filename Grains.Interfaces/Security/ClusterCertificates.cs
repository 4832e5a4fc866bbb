using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace OrleansStorage.Security;

/// <summary>What a certificate of the cluster lets its holder be.</summary>
public enum CertificateRole
{
    /// <summary>A storage host: its silo port talks only to other hosts.</summary>
    Host,

    /// <summary>A client (the CLI, the .NET library, an NBD server): only the gateways take it.</summary>
    Client,

    /// <summary>A TLS server that is not a host (an NBD export): it serves clients and joins nothing.</summary>
    Server,
}

/// <summary>
/// Issues the cluster's certificates with .NET's own <see cref="CertificateRequest"/>: one
/// authority per cluster and, under it, a certificate per host and per client. The role is in
/// the extended key usage — a host certificate serves TLS and connects to other hosts (server
/// and client authentication), a client certificate only authenticates a client, a server
/// certificate (an NBD export's) only serves — so neither stands in for a host on the silo port. Keys are ECDSA P-256: small, fast handshakes, and what every TLS
/// stack we interoperate with (OpenSSL, GnuTLS in qemu) accepts.
/// </summary>
public static class ClusterCertificates
{
    public const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";
    public const string ClientAuthenticationOid = "1.3.6.1.5.5.7.3.2";

    /// <summary>Long-lived: replacing the authority means reissuing every certificate.</summary>
    public static readonly TimeSpan AuthorityLifetime = TimeSpan.FromDays(3650);

    /// <summary>Hosts and clients get certificates that expire, and are reissued with <c>ostor pki</c>.</summary>
    public static readonly TimeSpan IssuedLifetime = TimeSpan.FromDays(825);

    /// <summary>A self-signed authority named after the cluster.</summary>
    public static X509Certificate2 CreateAuthority(string clusterName, DateTimeOffset now)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(Subject(clusterName, "ostor-ca"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        return request.CreateSelfSigned(now.AddMinutes(-5), now + AuthorityLifetime);
    }

    /// <summary>A host's certificate, naming the host and the addresses it is reached at.</summary>
    public static X509Certificate2 IssueHost(X509Certificate2 authority, string hostId, IEnumerable<IPAddress> addresses, DateTimeOffset now)
    {
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(hostId);
        foreach (var address in addresses)
        {
            names.AddIpAddress(address);
        }
        return Issue(authority, hostId, CertificateRole.Host, names, now);
    }

    /// <summary>A server's certificate (an NBD export), naming the addresses and DNS names clients reach it at.</summary>
    public static X509Certificate2 IssueServer(X509Certificate2 authority, string name, IEnumerable<IPAddress> addresses, IEnumerable<string> dnsNames, DateTimeOffset now)
    {
        var names = new SubjectAlternativeNameBuilder();
        foreach (var dns in dnsNames)
        {
            names.AddDnsName(dns);
        }
        foreach (var address in addresses)
        {
            names.AddIpAddress(address);
        }
        return Issue(authority, name, CertificateRole.Server, names, now);
    }

    /// <summary>A client's certificate; its common name is the client's name.</summary>
    public static X509Certificate2 IssueClient(X509Certificate2 authority, string clientName, DateTimeOffset now) =>
        Issue(authority, clientName, CertificateRole.Client, names: null, now);

    /// <summary>The role a certificate of this cluster was issued for, from its extended key usage.</summary>
    public static CertificateRole? RoleOf(X509Certificate2 certificate)
    {
        var usages = certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().SelectMany(e => e.EnhancedKeyUsages.Cast<Oid>()).Select(o => o.Value).ToHashSet();
        return (usages.Contains(ServerAuthenticationOid), usages.Contains(ClientAuthenticationOid)) switch
        {
            (true, true) => CertificateRole.Host,
            (true, false) => CertificateRole.Server,
            (false, true) => CertificateRole.Client,
            _ => null,
        };
    }

    /// <summary>The host or client name a certificate was issued to.</summary>
    public static string NameOf(X509Certificate2 certificate) => certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);

    private static X509Certificate2 Issue(X509Certificate2 authority, string name, CertificateRole role, SubjectAlternativeNameBuilder? names, DateTimeOffset now)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var unit = "ostor-" + role.ToString().ToLowerInvariant();
        var request = new CertificateRequest(Subject(name, unit), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, critical: true));
        var usages = new OidCollection();
        if (role is CertificateRole.Host or CertificateRole.Client)
        {
            usages.Add(new Oid(ClientAuthenticationOid));
        }
        if (role is CertificateRole.Host or CertificateRole.Server)
        {
            usages.Add(new Oid(ServerAuthenticationOid));
        }
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, critical: false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        if (names is not null)
        {
            request.CertificateExtensions.Add(names.Build());
        }
        var notAfter = now + IssuedLifetime < authority.NotAfter ? now + IssuedLifetime : new DateTimeOffset(authority.NotAfter);
        using var issued = request.Create(authority, now.AddMinutes(-5), notAfter, RandomNumberGenerator.GetBytes(16));
        return issued.CopyWithPrivateKey(key);
    }

    private static X500DistinguishedName Subject(string commonName, string unit)
    {
        var builder = new X500DistinguishedNameBuilder();
        builder.AddCommonName(commonName);
        builder.AddOrganizationalUnitName(unit);
        builder.AddOrganizationName("OrleansStorage");
        return builder.Build();
    }
}
