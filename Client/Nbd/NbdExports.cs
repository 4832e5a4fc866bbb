using OrleansStorage.Client.Library;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Nbd;

/// <summary>Which volumes the NBD server offers, looked up in the current cluster map at connect time.</summary>
public sealed class NbdExports(OstorClient client, IReadOnlyCollection<string> restrictTo)
{
    public async Task<IReadOnlyList<string>> ListAsync()
    {
        var map = await client.GetMapAsync();
        return map.Volumes.Select(v => v.Name).Where(IsOffered).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>The volume for an export name, or null. The empty name means the only export, when there is exactly one.</summary>
    public async Task<VolumeHandle?> ResolveAsync(string name)
    {
        if (name.Length == 0)
        {
            var all = await ListAsync();
            if (all.Count != 1)
            {
                return null;
            }
            name = all[0];
        }
        if (!IsOffered(name))
        {
            return null;
        }
        try
        {
            return await client.OpenVolumeAsync(name); // refreshes the map when the name is new to it
        }
        catch (VolumeNotFoundException)
        {
            return null;
        }
    }

    private bool IsOffered(string name) => restrictTo.Count == 0 || restrictTo.Contains(name);
}
