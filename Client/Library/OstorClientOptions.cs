namespace OrleansStorage.Client.Library;

public sealed class OstorClientOptions
{
    /// <summary>Default gateway of the local cluster started by <c>infra/cluster up</c>.</summary>
    public const string LocalGateway = "127.0.0.1:30000";

    /// <summary>Gateways as <c>host:port</c>; any live one will do.</summary>
    public IList<string> Gateways { get; } = [LocalGateway];

    public string ClusterId { get; set; } = "ostor";

    /// <summary>
    /// The cluster's certificates (<see cref="OrleansStorage.Security.PkiDirectory"/>): with it the
    /// client speaks mutual TLS to the gateways as <see cref="ClientName"/> and takes only hosts of
    /// this cluster. Empty: plain text, which a cluster with TLS refuses.
    /// </summary>
    public string PkiDirectory { get; set; } = "";

    /// <summary>Whose client certificate in <see cref="PkiDirectory"/> this client presents.</summary>
    public string ClientName { get; set; } = DefaultClientName;

    /// <summary>The client <c>infra/cluster up</c> issues a certificate for: the local administrator.</summary>
    public const string DefaultClientName = "admin";

    public string ServiceId { get; set; } = "ostor";

    /// <summary>
    /// Follow map pushes on the cluster-map stream. Long-running clients should; a short-lived CLI
    /// call need not (it pulls the map and relies on the epoch check).
    /// </summary>
    public bool SubscribeToMapChanges { get; set; } = true;

    /// <summary>
    /// How long one piece of a request keeps being retried (stale epoch, misdirected, host
    /// unreachable, placement group unavailable) before it fails. It must outlast failure
    /// detection: a host that dies stalls its writes until membership declares it dead and the
    /// map drops it.
    /// </summary>
    public TimeSpan RetryTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>First pause between attempts; doubles each time up to one second.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// How long one call waits for its answer before it counts as failed and is retried. A call in
    /// flight through a gateway whose silo died gets no answer at all, so this bounds how long I/O
    /// stalls when a host dies. Orleans drops a request that waited past it unexecuted, so a
    /// late copy does not run after its retry.
    /// </summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(5);

    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(20);
}
