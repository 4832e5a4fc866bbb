namespace OrleansStorage;

/// <summary>Names of the grain storages every silo must register (both backed by PostgreSQL in a deployment).</summary>
public static class StorageNames
{
    /// <summary>Holds the management service's cluster map.</summary>
    public const string ClusterStore = "ostor";

    /// <summary>Stream pub-sub state; the name Orleans' streaming runtime looks for.</summary>
    public const string PubSubStore = "PubSubStore";
}
