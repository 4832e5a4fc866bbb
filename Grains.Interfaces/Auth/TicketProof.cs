using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace OrleansStorage.Auth;

/// <summary>
/// What a client signs to get a ticket, and how the signature is checked. The text names its
/// purpose and the cluster, so a signature made for anything else is worth nothing here.
/// </summary>
public static class TicketProof
{
    /// <summary>How far a proof's clock may be from the silo's (either way).</summary>
    public static readonly TimeSpan Freshness = TimeSpan.FromMinutes(5);

    public static byte[] SignedText(string clusterId, long unixSeconds, byte[] nonce) =>
        Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"ostor-ticket-request-v1\n{clusterId}\n{unixSeconds}\n{Convert.ToBase64String(nonce)}"));

    public static TicketRequest Sign(X509Certificate2 identity, string clusterId, DateTimeOffset now)
    {
        using var key = identity.GetECDsaPrivateKey() ?? throw new CryptographicException("the client certificate has no ECDSA private key");
        var nonce = RandomNumberGenerator.GetBytes(16);
        var seconds = now.ToUnixTimeSeconds();
        return new TicketRequest(identity.RawData, seconds, nonce, key.SignData(SignedText(clusterId, seconds, nonce), HashAlgorithmName.SHA256));
    }

    /// <summary>Null when the signature is the certificate key's over this cluster's text, made within <see cref="Freshness"/> of <paramref name="now"/>; else why not.</summary>
    public static string? Refusal(TicketRequest request, X509Certificate2 certificate, string clusterId, DateTimeOffset now)
    {
        var signedAt = DateTimeOffset.FromUnixTimeSeconds(Math.Clamp(request.UnixSeconds, 0, 253402300799));
        if ((now - signedAt).Duration() > Freshness)
        {
            return $"the request was signed at {signedAt:u}, more than {Freshness.TotalMinutes:0} minutes from this host's clock ({now:u})";
        }
        using var key = certificate.GetECDsaPublicKey();
        if (key is null || request.Nonce.Length is < 8 or > 64
            || !key.VerifyData(SignedText(clusterId, request.UnixSeconds, request.Nonce), request.Signature, HashAlgorithmName.SHA256))
        {
            return "the signature is not the certificate's key's";
        }
        return null;
    }
}
