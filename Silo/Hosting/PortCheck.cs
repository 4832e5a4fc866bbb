using System.Net;
using System.Net.Sockets;

namespace OrleansStorage.Silo.Hosting;

/// <summary>
/// Whether a silo's ports are free. Orleans' listener lets a second process share a port, and
/// two clusters behind one port send each client to either at random; a plain bind (no reuse
/// flags) fails on a port anyone holds, which is what a start must hear.
/// </summary>
internal static class PortCheck
{
    /// <summary>The line naming the first taken port, or null when all are free.</summary>
    public static string? Taken(IPAddress address, params (string Door, int Port)[] ports)
    {
        foreach (var (door, port) in ports)
        {
            using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                socket.Bind(new IPEndPoint(address, port));
            }
            catch (SocketException ex)
            {
                return NotFree(door, $"{address}:{port}", ex.SocketErrorCode.ToString());
            }
        }
        return null;
    }

    /// <summary>The line for a port someone holds, found by this check or by a listener's bind.</summary>
    public static string NotFree(string door, string endpoint, string reason) =>
        $"the {door} port {endpoint} is not free ({reason}): another process, perhaps another cluster's silo, holds it; stop it or give --{door}-port another port";
}
