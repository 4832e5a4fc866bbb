using Microsoft.Extensions.Logging;
using OrleansStorage.Auth;

namespace OrleansStorage.Client.Nbd;

/// <summary>A TLS client's session kept within its grant as the grant changes (issue 29, item 2).</summary>
internal sealed partial class NbdConnection
{
    /// <summary>
    /// Keeps a TLS client's session within its grant as it changes (<see cref="NbdGrantWatch"/>):
    /// a grant that no longer allows writing the volume turns the export read-only (writes answer
    /// EPERM from then on), one that no longer allows reading it closes the connection. A grant
    /// that widens changes nothing: the client was told the export is read-only and reconnects
    /// to write. Returns what stops following it; null for a client the cluster checks nothing of.
    /// </summary>
    private IDisposable? FollowGrant(CancellationTokenSource requests)
    {
        if (_grant is null || _tlsClient is null || _volume is not { } volume)
        {
            return null;
        }
        var watched = _server.Grants.Watch(_grant);
        var client = _tlsClient;
        void Narrow(ClientGrant grant)
        {
            if (!grant.Allows(CapabilityLevel.Read, volume.VolumeName))
            {
                _revoked = true; // requests already decrypted and buffered are refused too
                NbdLog.AccessLost(_logger, _remote, client, Described(grant), "read", volume.Name, "connection closed");
                try
                {
                    requests.Cancel();
                }
                catch (ObjectDisposedException)
                {
                    // the session ended meanwhile
                }
            }
            else if (!_readOnly && !grant.Allows(CapabilityLevel.Write, volume.VolumeName))
            {
                _readOnly = true;
                NbdLog.AccessLost(_logger, _remote, client, Described(grant), "write", volume.Name, "writes, trims and write-zeroes now answer EPERM");
            }
        }
        static string Described(ClientGrant grant) => grant.Capabilities.Length == 0 ? "no grant" : $"'{Capability.Format(grant.Capabilities)}'";
        watched.Changed += Narrow;
        Narrow(watched.Grant); // another session's lookup may have seen a change since this handshake
        return new GrantFollowing(_server.Grants, watched, Narrow);
    }

    private sealed class GrantFollowing(NbdGrantWatch grants, NbdGrantWatch.Watched watched, Action<ClientGrant> narrow) : IDisposable
    {
        public void Dispose()
        {
            watched.Changed -= narrow;
            grants.Unwatch(watched);
        }
    }
}
