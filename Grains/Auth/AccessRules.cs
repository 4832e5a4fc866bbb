using System.Collections.Concurrent;
using System.Reflection;

namespace OrleansStorage.Auth;

/// <summary>
/// What each grain method needs, read once per method: our interfaces say it with
/// <see cref="RequiresAttribute"/> (absent: hosts only); of Orleans' own, clients need only the
/// stream pub-sub (to follow map pushes), and everything else is for hosts.
/// </summary>
internal static class AccessRules
{
    /// <summary>Orleans interfaces a client calls in normal use: registering its map-stream subscription.</summary>
    private static readonly HashSet<string> ClientOrleansInterfaces = new(StringComparer.Ordinal)
    {
        "IPubSubRendezvousGrain",
    };

    /// <summary>
    /// Orleans interfaces open without a ticket: the grain-type manifest a client reads while it
    /// connects (before it can ask for a ticket; it holds no data), and a grain's own timer ticks,
    /// which never cross the wire.
    /// </summary>
    private static readonly HashSet<string> OpenOrleansInterfaces = new(StringComparer.Ordinal)
    {
        "IClusterManifestSystemTarget",
        "IGrainTimerInvoker",
    };

    private static readonly RequiresAttribute HostsOnly = new(Access.Host);
    private static readonly RequiresAttribute AnyTicket = new(Access.Authenticated);
    private static readonly RequiresAttribute Open = new(Access.Anyone);
    private static readonly ConcurrentDictionary<MethodInfo, RequiresAttribute> Rules = new();

    public static RequiresAttribute Of(MethodInfo? method) => method is null ? HostsOnly : Rules.GetOrAdd(method, Read);

    private static RequiresAttribute Read(MethodInfo method)
    {
        var declaring = method.DeclaringType;
        if (declaring?.Namespace?.StartsWith("OrleansStorage", StringComparison.Ordinal) == true)
        {
            return method.GetCustomAttribute<RequiresAttribute>() ?? HostsOnly;
        }
        if (declaring?.Namespace?.StartsWith("Orleans", StringComparison.Ordinal) != true)
        {
            return HostsOnly;
        }
        var name = declaring.IsGenericType ? declaring.Name[..declaring.Name.IndexOf('`', StringComparison.Ordinal)] : declaring.Name;
        return OpenOrleansInterfaces.Contains(name) ? Open
            : ClientOrleansInterfaces.Contains(name) ? AnyTicket
            : HostsOnly;
    }
}
