using System.Net;
using System.Net.Sockets;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// Who holds a connection to the NBD server. A connection still in its handshake (it has not
/// chosen an export, and with TLS not yet shown a certificate or key) costs nothing to open, so
/// handshakes get a small budget of their own, per address and in all: a new connection over it
/// displaces the oldest handshake (of its own address when that address is over its share, else
/// of the address holding the most), and is never itself refused. A connection that proves who
/// it is (its TLS handshake) or, in plain text, chooses an export becomes a session, counted
/// against the session caps (<see cref="NbdServerOptions.MaxConnections"/>, per address), which
/// handshakes never fill: idle connections from anyone cannot lock out a client that finishes
/// its handshake (docs/security.md, "The NBD server under hostile clients").
/// </summary>
internal sealed class NbdAdmission(NbdServerOptions options)
{
    private readonly int _maxHandshakes = Math.Max(1, options.MaxHandshakes);
    private readonly int _maxHandshakesPerAddress = Math.Max(1, options.MaxHandshakesPerAddress);
    private readonly Lock _gate = new();
    private readonly LinkedList<Slot> _handshakes = [];
    private readonly Dictionary<IPAddress, int> _handshakesFrom = [];
    private readonly Dictionary<IPAddress, int> _sessionsFrom = [];
    private int _sessions;

    /// <summary>One connection's place: in its handshake, a session, or gone.</summary>
    public sealed class Slot(Socket socket, IPAddress address)
    {
        public Socket Socket { get; } = socket;

        public IPAddress Address { get; } = address;

        /// <summary>The client's address and port, kept: the socket of a displaced handshake is closed.</summary>
        public EndPoint? Remote { get; } = socket.RemoteEndPoint;

        internal LinkedListNode<Slot>? Handshake { get; set; }

        internal bool IsSession { get; set; }
    }

    /// <summary>A connection the session caps turned away (already counted and logged): it ends quietly.</summary>
    public sealed class RefusedException(string reason) : Exception(reason);

    /// <summary>Connections open now, handshakes and sessions.</summary>
    public int Open
    {
        get
        {
            lock (_gate)
            {
                return _handshakes.Count + _sessions;
            }
        }
    }

    /// <summary>
    /// Takes a new connection into the handshake budget; <paramref name="displaced"/> is the
    /// handshake it pushed out, if the budget was full, for the caller to close with its reason.
    /// </summary>
    public Slot Admit(Socket socket, IPAddress address, out (Slot Slot, string Reason)? displaced)
    {
        var slot = new Slot(socket, address);
        lock (_gate)
        {
            displaced = null;
            var fromAddress = _handshakesFrom.GetValueOrDefault(address);
            if (fromAddress >= _maxHandshakesPerAddress)
            {
                displaced = (OldestFrom(address), $"{fromAddress} connections from {address} are in their handshake, the most one address may have: the oldest of them is closed");
            }
            else if (_handshakes.Count >= _maxHandshakes)
            {
                // From the address holding the most: a flood from a few addresses displaces its own
                // handshakes, not an honest client's one.
                var busiest = _handshakesFrom.MaxBy(a => a.Value).Key;
                displaced = (OldestFrom(busiest), $"{_handshakes.Count} connections are in their handshake, the most this server keeps: the oldest from {busiest}, which holds the most, is closed");
            }
            if (displaced is { } gone)
            {
                EndHandshake(gone.Slot);
            }
            slot.Handshake = _handshakes.AddLast(slot);
            _handshakesFrom[address] = _handshakesFrom.GetValueOrDefault(address) + 1;
        }
        return slot;
    }

    /// <summary>
    /// The slot's client proved who it is (TLS) or chose an export: it becomes a session, or the
    /// reason it cannot (the session caps; or its handshake was displaced meanwhile, already
    /// counted then: <paramref name="displaced"/>). A session asking again is no change.
    /// </summary>
    public string? Establish(Slot slot, out bool displaced)
    {
        lock (_gate)
        {
            displaced = false;
            if (slot.IsSession)
            {
                return null;
            }
            if (slot.Handshake is null)
            {
                displaced = true;
                return "its connection was closed to make room for newer ones while it finished its handshake";
            }
            var fromAddress = _sessionsFrom.GetValueOrDefault(slot.Address);
            var refusal = _sessions >= options.MaxConnections ? $"{_sessions} sessions are open, the most this server takes"
                : fromAddress >= options.MaxConnectionsPerAddress ? $"{fromAddress} sessions from {slot.Address} are open, the most one address may have"
                : null;
            EndHandshake(slot);
            if (refusal is null)
            {
                slot.IsSession = true;
                _sessions++;
                _sessionsFrom[slot.Address] = fromAddress + 1;
            }
            return refusal;
        }
    }

    /// <summary>The connection ended: its place is free. Returns whether no connection is left.</summary>
    public bool Release(Slot slot)
    {
        lock (_gate)
        {
            if (slot.Handshake is not null)
            {
                EndHandshake(slot);
            }
            else if (slot.IsSession)
            {
                slot.IsSession = false;
                _sessions--;
                Decrement(_sessionsFrom, slot.Address);
            }
            return _handshakes.Count + _sessions == 0;
        }
    }

    private Slot OldestFrom(IPAddress address)
    {
        for (var node = _handshakes.First; node is not null; node = node.Next)
        {
            if (node.Value.Address.Equals(address))
            {
                return node.Value;
            }
        }
        throw new InvalidOperationException($"no handshake from {address} is counted"); // the counts and the list disagree: a bug
    }

    private void EndHandshake(Slot slot)
    {
        _handshakes.Remove(slot.Handshake!);
        slot.Handshake = null;
        Decrement(_handshakesFrom, slot.Address);
    }

    private static void Decrement(Dictionary<IPAddress, int> counts, IPAddress address)
    {
        if (--counts[address] == 0)
        {
            counts.Remove(address);
        }
    }
}
