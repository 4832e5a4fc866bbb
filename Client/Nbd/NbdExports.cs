using OrleansStorage.Auth;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// Which volumes the NBD server offers, looked up in the current cluster map at connect time, and
/// to whom: a client known by its TLS certificate sees only the volumes its grant lets it read
/// (<paramref name="client"/> itself must be an administrator to read grants). A plain-text
/// client, or any client when the cluster runs without TLS, gets the server's own rights.
/// </summary>
public sealed class NbdExports(OstorClient client, IReadOnlyCollection<string> restrictTo)
{
    /// <summary>The grant of the client a TLS certificate names; null when the cluster checks none.</summary>
    public async Task<ClientGrant?> GrantOfAsync(string clientName)
    {
        if (client.Grant is null)
        {
            return null;
        }
        try
        {
            return await client.GetClientAsync(clientName) ?? new ClientGrant(clientName, []);
        }
        catch (AccessDeniedException ex)
        {
            throw new AccessDeniedException($"this NBD server cannot look up what client '{clientName}' may do: run it as a client with admin:* ({ex.Message})");
        }
    }

    public async Task<IReadOnlyList<string>> ListAsync(ClientGrant? grant)
    {
        var map = await client.GetMapAsync();
        return map.Volumes.Select(v => v.Name).Where(n => IsOffered(n, grant)).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>The volume for an export name, or null. The empty name means the only export, when there is exactly one.</summary>
    public async Task<VolumeHandle?> ResolveAsync(string name, ClientGrant? grant)
    {
        if (name.Length == 0)
        {
            var all = await ListAsync(grant);
            if (all.Count != 1)
            {
                return null;
            }
            name = all[0];
        }
        if (!IsOffered(name, grant))
        {
            return null;
        }
        try
        {
            return await client.OpenVolumeAsync(name); // refreshes the map when the name is new to it
        }
        catch (Exception ex) when (ex is VolumeNotFoundException or SnapshotNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Tells the cluster a connection has the volume open for writing, until disposed.</summary>
    public VolumeWriter HoldOpenForWriting(string volumeName, string holder) => client.HoldOpenForWriting(volumeName, holder);

    /// <summary>Served read-only: the client may read the volume but not write it.</summary>
    public static bool IsReadOnlyFor(ClientGrant? grant, VolumeHandle volume) =>
        volume.IsReadOnly || (grant is not null && !grant.Allows(CapabilityLevel.Write, volume.VolumeName));

    /// <summary>
    /// Whether the export is served to this client. A snapshot, <c>VOL@SNAP</c>, is offered where
    /// its volume is (restricting the server to VOL offers VOL's snapshots too), under the volume's
    /// capabilities.
    /// </summary>
    private bool IsOffered(string name, ClientGrant? grant)
    {
        var volume = VolumeOf(name);
        return (restrictTo.Count == 0 || restrictTo.Contains(name) || restrictTo.Contains(volume)) && (grant is null || grant.Allows(CapabilityLevel.Read, volume));
    }

    private static string VolumeOf(string exportName) =>
        exportName.IndexOf(VolumeHandle.SnapshotSeparator, StringComparison.Ordinal) is var at and >= 0 ? exportName[..at] : exportName;
}
