using System.Net;

namespace OrleansStorage.Silo.Web;

/// <summary>
/// The silo's HTTP endpoint: <c>/metrics</c>, the dashboard and the Orleans Dashboard. Bound from
/// configuration section "Http"; <c>--http-port</c> on the command line.
/// </summary>
public sealed class SiloHttpOptions
{
    public const string SectionName = "Http";

    /// <summary>The port <c>infra/cluster</c> gives host 1; host N gets this + N - 1 (<c>OSTOR_HTTP_PORT_BASE</c>).</summary>
    public const int DefaultPort = 18080;

    /// <summary>
    /// Loopback by default: the pages are read-only but name every volume and host, and they ask
    /// for no credentials, so reaching them from elsewhere is a choice made with a reverse proxy
    /// that does (docs/monitoring.md).
    /// </summary>
    public string Address { get; set; } = "127.0.0.1";

    /// <summary>0 turns the endpoint off.</summary>
    public int Port { get; set; } = DefaultPort;

    /// <summary>Mount the Orleans Dashboard at /orleans/ (its grains and call profiler run on every silo with it).</summary>
    public bool OrleansDashboard { get; set; } = true;

    /// <summary>Export Orleans' own meter (messaging, activations, scheduler) on /metrics beside ours and the runtime's.</summary>
    public bool OrleansMetrics { get; set; } = true;

    public bool IsOn => Port != 0;

    public string? Problem()
    {
        if (Port is < 0 or > 65535)
        {
            return $"Http:Port (--http-port) {Port} must be 0 (off) or a port in 1-65535";
        }
        if (!IPAddress.TryParse(Address, out _))
        {
            return $"Http:Address '{Address}' is not an IP address";
        }
        return null;
    }
}
