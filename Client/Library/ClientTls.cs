using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Orleans.Connections.Security;
using OrleansStorage.Errors;
using OrleansStorage.Security;

namespace OrleansStorage.Client.Library;

/// <summary>
/// A client's side of the gateways' mutual TLS: it presents its client certificate and talks
/// only to a gateway whose certificate is a host certificate of the same cluster authority.
/// </summary>
internal sealed class ClientTls(ClusterTrust trust, X509Certificate2 identity)
{
    public X509Certificate2 Identity => identity;

    public ClusterTrust Trust => trust;

    public static ClientTls Load(string pkiDirectory, string clientName)
    {
        var pki = new PkiDirectory(pkiDirectory);
        try
        {
            return new ClientTls(pki.LoadTrust(), pki.LoadIdentity(CertificateRole.Client, clientName));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw new InvalidRequestException($"cannot load the certificates of client '{clientName}' from {pki.Path}: {ex.Message}");
        }
    }

    public void Configure(IClientBuilder client) =>
        client.UseTls(identity, options =>
        {
            options.RemoteCertificateMode = RemoteCertificateMode.RequireCertificate;
            options.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
            options.RemoteCertificateValidation = (certificate, _, _) => trust.Refusal(certificate, CertificateRole.Host) is null;
        });
}
