using System.Security.Cryptography;
using System.Text;

namespace OrleansStorage.Security;

/// <summary>
/// Who may read a host's or an NBD server's HTTP endpoint (dashboard, /metrics, Orleans
/// Dashboard) on a cluster with certificates: whoever sends the cluster's web password
/// (<c>web.password</c> in its PKI folder) with HTTP Basic authentication, under any user name.
/// The endpoints are read-only, so one password for reading is what is asked; they listen on
/// loopback, where no other user can see the password go by.
/// </summary>
public sealed class WebCredentials(string password)
{
    /// <summary>What a 401 answer asks for.</summary>
    public const string Challenge = "Basic realm=\"OrleansStorage\", charset=\"UTF-8\"";

    private readonly byte[] _password = Encoding.UTF8.GetBytes(password);

    /// <summary>The Authorization header that carries it (for a client of the endpoint: a test, a script).</summary>
    public string Header(string user = "admin") => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{Encoding.UTF8.GetString(_password)}"));

    /// <summary>Whether an Authorization header carries the password (compared in constant time).</summary>
    public bool Admits(string? authorization)
    {
        const string scheme = "Basic ";
        if (authorization is null || !authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        byte[] decoded;
        try
        {
            decoded = Convert.FromBase64String(authorization[scheme.Length..].Trim());
        }
        catch (FormatException)
        {
            return false;
        }
        var colon = Array.IndexOf(decoded, (byte)':');
        return colon >= 0 && CryptographicOperations.FixedTimeEquals(decoded.AsSpan(colon + 1), _password);
    }
}
