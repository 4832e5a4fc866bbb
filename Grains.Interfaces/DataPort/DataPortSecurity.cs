using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using OrleansStorage.Security;

namespace OrleansStorage.DataPort;

/// <summary>
/// How a data connection is secured on a cluster with certificates: mutual TLS with this
/// party's certificate, talking only to a host certificate of the same authority, and the
/// party's current ticket sent ahead of its requests (a hello) so the server knows what it may do.
/// </summary>
/// <param name="Ticket">The current ticket; a new array when it was renewed (the link sends it again).</param>
public sealed record DataPortSecurity(X509Certificate2 Identity, ClusterTrust Trust, Func<byte[]?> Ticket)
{
    public SslClientAuthenticationOptions ClientOptions() => new()
    {
        // The name is not checked: the certificate's chain to this cluster's authority and its host role are.
        TargetHost = "ostor-host",
        ClientCertificates = [Identity],
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        RemoteCertificateValidationCallback = (_, certificate, _, _) =>
            Trust.Refusal(certificate as X509Certificate2 ?? (certificate is null ? null : X509CertificateLoader.LoadCertificate(certificate.GetRawCertData())), CertificateRole.Host) is null,
    };
}
