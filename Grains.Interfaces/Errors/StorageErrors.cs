namespace OrleansStorage.Errors;

/// <summary>Base of every error OrleansStorage sends across the wire; its message is meant for a person.</summary>
[GenerateSerializer, Alias("ostor.StorageException")]
public class StorageException : Exception
{
    public StorageException() { }

    public StorageException(string message) : base(message) { }

    public StorageException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// The request carried an older epoch than the storage server's. The sender must refresh its map
/// (to at least <see cref="ServerEpoch"/>) and retry on the new placement.
/// </summary>
[GenerateSerializer, Alias("ostor.StaleEpochException")]
public sealed class StaleEpochException : StorageException
{
    public StaleEpochException(long requestEpoch, long serverEpoch, string hostId)
        : base($"stale epoch: request carried epoch {requestEpoch}, host '{hostId}' is at epoch {serverEpoch}")
    {
        RequestEpoch = requestEpoch;
        ServerEpoch = serverEpoch;
        HostId = hostId;
    }

    [Id(0)] public long RequestEpoch { get; private set; }
    [Id(1)] public long ServerEpoch { get; private set; }
    [Id(2)] public string HostId { get; private set; }
}

/// <summary>The request reached a host that is not (or not the primary) in the placement group's replica set at this epoch.</summary>
[GenerateSerializer, Alias("ostor.MisdirectedRequestException")]
public sealed class MisdirectedRequestException : StorageException
{
    public MisdirectedRequestException(string hostId, Guid volumeId, int placementGroup, long epoch, string reason)
        : base($"misdirected request: host '{hostId}' {reason} for placement group {placementGroup} of volume {volumeId} at epoch {epoch}")
    {
        HostId = hostId;
        Epoch = epoch;
    }

    private MisdirectedRequestException(string message, string hostId, long epoch) : base(message)
    {
        HostId = hostId;
        Epoch = epoch;
    }

    /// <summary>The error as a server worded it (its data port sends only the message).</summary>
    public static MisdirectedRequestException FromMessage(string message, string hostId, long epoch) => new(message, hostId, epoch);

    [Id(0)] public string HostId { get; private set; }
    [Id(1)] public long Epoch { get; private set; }
}

/// <summary>A <c>VOL@SNAP</c> name whose snapshot the map does not have (found by the client, never sent).</summary>
public sealed class SnapshotNotFoundException(string volume, string snapshot)
    : StorageException($"volume '{volume}' has no snapshot named '{snapshot}'");

[GenerateSerializer, Alias("ostor.VolumeNotFoundException")]
public sealed class VolumeNotFoundException : StorageException
{
    public VolumeNotFoundException(string volume) : base($"no volume named '{volume}'") { }

    public VolumeNotFoundException(Guid volumeId, long epoch) : base($"no volume with id {volumeId} at epoch {epoch}") { }

    private VolumeNotFoundException(string message, bool _) : base(message) { }

    /// <summary>The error as a server worded it (its data port sends only the message).</summary>
    public static VolumeNotFoundException FromMessage(string message) => new(message, true);
}

/// <summary>Bad input: the message names the value and the limit. Nothing was changed.</summary>
[GenerateSerializer, Alias("ostor.InvalidRequestException")]
public sealed class InvalidRequestException : StorageException
{
    public InvalidRequestException(string message) : base(message) { }
}

/// <summary>A host is not alive (or unknown), so its storage server cannot serve or be activated.</summary>
[GenerateSerializer, Alias("ostor.HostUnavailableException")]
public sealed class HostUnavailableException : StorageException
{
    public HostUnavailableException(string hostId, string reason) : base($"host '{hostId}' is unavailable: {reason}")
    {
        HostId = hostId;
    }

    [Id(0)] public string HostId { get; private set; }
}

/// <summary>
/// Every replica of a placement group is down: its data cannot be read or written until one of
/// them returns. Never answered with other data.
/// </summary>
[GenerateSerializer, Alias("ostor.PlacementGroupUnavailableException")]
public sealed class PlacementGroupUnavailableException : StorageException
{
    public PlacementGroupUnavailableException(string volumeName, int placementGroup, long epoch, IEnumerable<string> absentHosts)
        : base($"unavailable: placement group {placementGroup} of volume '{volumeName}' has no live replica at epoch {epoch} (waiting for {string.Join(", ", absentHosts.DefaultIfEmpty("a host"))} to return)")
    {
        Epoch = epoch;
    }

    [Id(0)] public long Epoch { get; private set; }
}

/// <summary>
/// The management service cannot do its work right now: its database did not answer, or it lost
/// a race with another activation and must reload. Nothing was changed; retrying later is safe.
/// </summary>
[GenerateSerializer, Alias("ostor.ManagementUnavailableException")]
public sealed class ManagementUnavailableException : StorageException
{
    public ManagementUnavailableException(string reason) : base($"management service unavailable: {reason}") { }
}

/// <summary>
/// A snapshot create refused for now: the management service started recently (a failover) and
/// may not have heard yet from every client writing the volume (they register again within
/// <see cref="Management.VolumeWriters.AllKnownAfter"/>), so it could not pause them all and the
/// snapshot could split a write. Nothing was changed; the client library asks again after
/// <see cref="RetryAfter"/>.
/// </summary>
[GenerateSerializer, Alias("ostor.WritersNotYetKnownException")]
public sealed class WritersNotYetKnownException : StorageException
{
    public WritersNotYetKnownException(string volumeName, TimeSpan retryAfter)
        : base($"snapshot of volume '{volumeName}' not taken yet: the management service started less than {Management.VolumeWriters.AllKnownAfter.TotalSeconds:0} s ago and may not know all the volume's writers; ask again in {retryAfter.TotalSeconds:0.0} s")
    {
        RetryAfter = retryAfter;
    }

    [Id(0)] public TimeSpan RetryAfter { get; private set; }
}

/// <summary>
/// Two parts of different clusters met: a data directory, a host, a map or an Orleans deployment
/// belongs to another cluster than the one it was offered to. Nothing was changed.
/// </summary>
[GenerateSerializer, Alias("ostor.ForeignClusterException")]
public sealed class ForeignClusterException : StorageException
{
    public ForeignClusterException(string message) : base(message) { }
}

/// <summary>
/// A host's disk failed an fsync. Linux may then have dropped the unwritten pages and marked them
/// clean, so no later fsync on that host means anything: the host stops serving (fail-stop), leaves
/// the map (Out), and comes back empty to be refilled from its peers (docs/failures.md).
/// </summary>
[GenerateSerializer, Alias("ostor.DiskFailedException")]
public sealed class DiskFailedException : StorageException
{
    public DiskFailedException(string reason) : base($"disk failed: {reason}; this host serves nothing until it is restarted and refilled from its peers") { }
}

/// <summary>
/// The primary may not serve right now: it holds no lease for the current epoch (the management
/// service could not be reached to renew it), or an earlier primary of the group may still hold
/// one. Nothing was read or written; retrying on a fresh map is safe (docs/failures.md, "Read leases").
/// </summary>
[GenerateSerializer, Alias("ostor.PrimaryLeaseException")]
public sealed class PrimaryLeaseException : StorageException
{
    public PrimaryLeaseException(string hostId, long epoch, string reason)
        : base($"host '{hostId}' holds no primary lease at epoch {epoch}: {reason}") { }
}

/// <summary>
/// Blocks failed their checksums on every replica that was asked: no good copy of them is left
/// (or none could be reached). Never answered with the bad bytes; reading them again will not help
/// until a replica with a good copy returns.
/// </summary>
[GenerateSerializer, Alias("ostor.DataCorruptException")]
public sealed class DataCorruptException : StorageException
{
    public DataCorruptException(string message) : base(message) { }
}

/// <summary>
/// The caller may not do this: it has no valid ticket, or its capabilities do not cover the
/// volume or the operation. Nothing was done; retrying does not help.
/// </summary>
[GenerateSerializer, Alias("ostor.AccessDeniedException")]
public sealed class AccessDeniedException : StorageException
{
    public const string Prefix = "access denied: ";

    public AccessDeniedException(string message) : base(Prefix + message) { }

    private AccessDeniedException(string message, bool _) : base(message) { }

    /// <summary>The refusal as a server worded it, prefix and all.</summary>
    public static AccessDeniedException FromMessage(string message) => new(message, true);
}

/// <summary>
/// The request's ticket was issued before its client's grant changed (<c>ostor auth caps</c> or
/// <c>remove</c>): nothing was done. The client gets a fresh ticket, which carries the grant as
/// it is now (or none is issued), and sends the request again.
/// </summary>
[GenerateSerializer, Alias("ostor.TicketRevokedException")]
public sealed class TicketRevokedException : StorageException
{
    public TicketRevokedException(string message) : base(message) { }
}

/// <summary>
/// The volume's QoS limits have more requests waiting on this host than it queues: nothing was
/// done; the client retries after a pause, which is how the limit holds it back.
/// </summary>
[GenerateSerializer, Alias("ostor.VolumeThrottledException")]
public sealed class VolumeThrottledException : StorageException
{
    public VolumeThrottledException(object limits, TimeSpan retryAfter)
        : base($"volume throttled by its QoS limits ({limits}): retry in {retryAfter.TotalMilliseconds:0} ms")
    {
        RetryAfter = retryAfter;
    }

    private VolumeThrottledException(string message, TimeSpan retryAfter) : base(message)
    {
        RetryAfter = retryAfter;
    }

    /// <summary>The throttling as a server worded it.</summary>
    public static VolumeThrottledException FromMessage(string message, TimeSpan retryAfter) => new(message, retryAfter);

    [Id(0)] public TimeSpan RetryAfter { get; private set; }
}

/// <summary>
/// A clone's segment that was never written holds nothing of its own: its bytes are the parent
/// snapshot's. The client library reads them there, or materializes the segment before a write.
/// </summary>
[GenerateSerializer, Alias("ostor.ReadThroughException")]
public sealed class ReadThroughException : StorageException
{
    public ReadThroughException(string message) : base(message) { }
}
