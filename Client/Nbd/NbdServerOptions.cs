using System.Net;
using System.Security.Cryptography.X509Certificates;
using OrleansStorage.Security;

namespace OrleansStorage.Client.Nbd;

/// <summary>Whether the export offers NBD_OPT_STARTTLS, and whether it insists on it.</summary>
public enum NbdTlsMode
{
    /// <summary>Plain text only (STARTTLS is refused): anyone who can connect reads and writes.</summary>
    Off,

    /// <summary>TLS for clients that ask, plain text for the rest.</summary>
    Allow,

    /// <summary>Every option but STARTTLS and ABORT is refused until TLS is up.</summary>
    Require,
}

public sealed class NbdServerOptions
{
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 10809);

    /// <summary>Volumes to export by name; empty exports every volume (including ones created later).</summary>
    public IReadOnlyCollection<string> Exports { get; set; } = [];

    /// <summary>Largest read or write a client may send; advertised as the maximum block size.</summary>
    public int MaxRequestBytes { get; set; } = 32 << 20;

    /// <summary>Payload bytes one connection may have in flight; bounds memory per connection.</summary>
    public long MaxInFlightBytesPerConnection { get; set; } = 64L << 20;

    /// <summary>Payload bytes the whole server may hold, over all connections (docs/security.md).</summary>
    public long MemoryBudgetBytes { get; set; } = 256L << 20;

    /// <summary>Sessions (connections that finished their handshake) at once; one more is closed when it finishes.</summary>
    public int MaxConnections { get; set; } = 256;

    /// <summary>Sessions at once from one client address.</summary>
    public int MaxConnectionsPerAddress { get; set; } = 64;

    /// <summary>Connections in their handshake at once; one more displaces the oldest (<see cref="NbdAdmission"/>).</summary>
    public int MaxHandshakes { get; set; } = 64;

    /// <summary>Connections in their handshake at once from one address; one more displaces that address's oldest.</summary>
    public int MaxHandshakesPerAddress { get; set; } = 16;

    /// <summary>How long a client may take from connecting to choosing an export (TLS included).</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long a write's payload may take to arrive after its header, and a reply to leave: a
    /// client that stalls inside a request, or stops reading its replies, is disconnected.
    /// </summary>
    public TimeSpan PayloadTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long a connection may send no request at all; null (the default) never times out,
    /// as a virtual machine's idle disk must stay attached.
    /// </summary>
    public TimeSpan? IdleTimeout { get; set; }

    public NbdTlsMode Tls { get; set; } = NbdTlsMode.Off;

    /// <summary>The server's certificate (role Server of the cluster's authority) for STARTTLS.</summary>
    public X509Certificate2? TlsCertificate { get; set; }

    /// <summary>Whose client certificates are taken: a client must present one of this authority's.</summary>
    public ClusterTrust? TlsClientTrust { get; set; }

    /// <summary>
    /// Pre-shared keys (<c>--tls-psk</c>): TLS with a key per username instead of certificates,
    /// for clients such as qemu's <c>tls-creds-psk</c>. When set, <see cref="TlsCertificate"/> is not used.
    /// </summary>
    public NbdPskKeys? TlsPsk { get; set; }

    /// <summary>
    /// How often the grants of the clients with open sessions are looked up again: a grant removed
    /// or narrowed reaches an open session within this (<see cref="NbdGrantWatch"/>).
    /// </summary>
    public TimeSpan GrantRecheckInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How long a client may take over the TLS handshake.</summary>
    public TimeSpan TlsHandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Largest option a client may send during the handshake (names are at most 4096 bytes).</summary>
    public int MaxOptionBytes { get; set; } = 64 << 10;
}
