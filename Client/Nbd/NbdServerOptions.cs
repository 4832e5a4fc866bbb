using System.Net;

namespace OrleansStorage.Client.Nbd;

public sealed class NbdServerOptions
{
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 10809);

    /// <summary>Volumes to export by name; empty exports every volume (including ones created later).</summary>
    public IReadOnlyCollection<string> Exports { get; set; } = [];

    /// <summary>Largest read or write a client may send; advertised as the maximum block size.</summary>
    public int MaxRequestBytes { get; set; } = 32 << 20;

    /// <summary>Payload bytes one connection may have in flight; bounds memory per connection.</summary>
    public long MaxInFlightBytesPerConnection { get; set; } = 64L << 20;

    /// <summary>Largest option a client may send during the handshake (names are at most 4096 bytes).</summary>
    public int MaxOptionBytes { get; set; } = 64 << 10;
}
