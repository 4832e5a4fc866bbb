namespace OrleansStorage.Storage;

/// <summary>
/// What made a storage server pull the map: the <c>trigger</c> label of <c>ostor_host_map_updates_total</c>
/// and the source in its "map applied" log line. A healthy cluster learns of new maps by push; many
/// by request mean pushes arrive late or not at all.
/// </summary>
internal static class MapTrigger
{
    public const string Activation = "activation";
    public const string Push = "push";

    /// <summary>A request carried a newer epoch, or named a volume this host did not know yet.</summary>
    public const string Request = "request";

    /// <summary>The management service granted a lease at a newer epoch.</summary>
    public const string Lease = "lease";

    /// <summary>The management service said the map moved on (a refresh, a purge, a copy order).</summary>
    public const string Refresh = "refresh";
}
