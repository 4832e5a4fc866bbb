namespace OrleansStorage.Maps;

/// <summary>Where the management service publishes every new <see cref="ClusterMap"/>.</summary>
public static class ClusterMapStream
{
    /// <summary>Name of the stream provider every silo and client registers.</summary>
    public const string ProviderName = "ostor";

    public const string Namespace = "cluster-map";

    /// <summary>Key of the one stream every party subscribes to (one management group).</summary>
    public const string Key = "default";
}
