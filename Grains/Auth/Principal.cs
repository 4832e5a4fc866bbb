using OrleansStorage.Errors;

namespace OrleansStorage.Auth;

/// <summary>Who a request comes from, as its ticket says: a host of the cluster, or a client with its grant.</summary>
public sealed record Principal(string Name, bool IsHost, DateTimeOffset Expires, ClientGrant Grant)
{
    public bool Allows(CapabilityLevel level, string volumeName) => IsHost || Grant.Allows(level, volumeName);

    /// <summary>Holds <paramref name="level"/> on some name: worth passing on to where the volume is known.</summary>
    public bool HoldsAny(CapabilityLevel level) => IsHost || Grant.Capabilities.Any(c => c.Level >= level);

    public bool IsClusterAdmin => IsHost || Grant.IsClusterAdmin;

    public string Describe() => IsHost ? $"host '{Name}'" : $"client '{Name}' (capabilities: {(Grant.Capabilities.Length == 0 ? "none" : Capability.Format(Grant.Capabilities))})";

    public AccessDeniedException Denied(string what) => new($"{Describe()} may not {what}");
}
