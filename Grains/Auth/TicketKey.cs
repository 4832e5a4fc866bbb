using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace OrleansStorage.Auth;

/// <summary>
/// Seals and opens tickets with the secret every host of the cluster holds (<c>tickets.key</c>):
/// HMAC-SHA256 over the ticket's fields, so a host trusts a ticket another host issued without
/// asking anyone, and a client can neither make one nor change what its own says. The layout:
/// version (1), kind (1: host 0, client 1), expiry (8, Unix seconds), name and capabilities in
/// <see cref="BinaryWriter"/> form, then the 32-byte tag.
/// </summary>
public sealed class TicketKey(byte[] secret)
{
    private const byte Version = 1;
    private const int TagLength = 32;
    private const int MaxTicketLength = 16 * 1024;
    private const int MaxCachedPrincipals = 4096;

    /// <summary>Opened tickets by tag: a client sends the same ticket thousands of times a second.</summary>
    private readonly ConcurrentDictionary<UInt128, Principal> _opened = new();

    public byte[] Seal(Principal principal)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(Version);
            writer.Write((byte)(principal.IsHost ? 0 : 1));
            writer.Write(principal.Expires.ToUnixTimeSeconds());
            writer.Write(principal.Name);
            writer.Write(principal.Grant.Capabilities.Length);
            foreach (var capability in principal.Grant.Capabilities)
            {
                writer.Write((byte)capability.Level);
                writer.Write(capability.Pattern);
            }
        }
        var body = buffer.Length;
        buffer.Write(HMACSHA256.HashData(secret, buffer.GetBuffer().AsSpan(0, (int)body)));
        return buffer.ToArray();
    }

    /// <summary>The principal a ticket names, or null with why not (missing, forged, expired).</summary>
    public Principal? Open(byte[]? ticket, DateTimeOffset now, out string? problem)
    {
        if (ticket is null)
        {
            problem = "the request carries no ticket";
            return null;
        }
        if (ticket.Length is <= TagLength or > MaxTicketLength)
        {
            problem = "the request's ticket is malformed";
            return null;
        }
        Span<byte> tag = stackalloc byte[TagLength];
        HMACSHA256.HashData(secret, ticket.AsSpan(0, ticket.Length - TagLength), tag);
        if (!CryptographicOperations.FixedTimeEquals(tag, ticket.AsSpan(ticket.Length - TagLength)))
        {
            problem = "the request's ticket was not sealed by this cluster";
            return null;
        }
        var id = new UInt128(BitConverter.ToUInt64(tag), BitConverter.ToUInt64(tag[8..]));
        if (!_opened.TryGetValue(id, out var principal))
        {
            principal = Decode(ticket);
            if (principal is null)
            {
                problem = "the request's ticket is malformed";
                return null;
            }
            if (_opened.Count >= MaxCachedPrincipals)
            {
                _opened.Clear();
            }
            _opened[id] = principal;
        }
        if (principal.Expires <= now)
        {
            problem = $"the ticket of {principal.Describe()} expired at {principal.Expires:u}";
            return null;
        }
        problem = null;
        return principal;
    }

    private static Principal? Decode(byte[] ticket)
    {
        try
        {
            using var reader = new BinaryReader(new MemoryStream(ticket, 0, ticket.Length - TagLength), Encoding.UTF8);
            if (reader.ReadByte() != Version)
            {
                return null;
            }
            var isHost = reader.ReadByte() == 0;
            var expires = DateTimeOffset.FromUnixTimeSeconds(reader.ReadInt64());
            var name = reader.ReadString();
            var count = reader.ReadInt32();
            if (count is < 0 or > 256)
            {
                return null;
            }
            var capabilities = new Capability[count];
            for (var i = 0; i < count; i++)
            {
                capabilities[i] = new Capability((CapabilityLevel)reader.ReadByte(), reader.ReadString());
            }
            return new Principal(name, isHost, expires, new ClientGrant(name, capabilities));
        }
        catch (Exception ex) when (ex is EndOfStreamException or ArgumentException or FormatException)
        {
            return null;
        }
    }
}
