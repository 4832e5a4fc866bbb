using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using OrleansStorage.Security;

namespace OrleansStorage.DataPort;

/// <summary>
/// Mutual TLS on the data port, as on the gateway: this host's certificate, and only host or
/// client certificates of this cluster's authority on the other end. Registered with the
/// cluster's certificates (<c>--pki</c>); without it the port speaks plain text, on loopback only.
/// </summary>
public sealed record DataPortServerTls(X509Certificate2 Identity, ClusterTrust Trust)
{
    public SslServerAuthenticationOptions ServerOptions(Action<string> refused) => new()
    {
        ServerCertificate = Identity,
        ClientCertificateRequired = true,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        RemoteCertificateValidationCallback = (_, certificate, _, _) =>
        {
            var refusal = Trust.Refusal(certificate as X509Certificate2, CertificateRole.Host, CertificateRole.Client);
            if (refusal is not null)
            {
                refused(refusal);
            }
            return refusal is null;
        },
    };
}
