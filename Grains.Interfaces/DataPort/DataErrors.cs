using OrleansStorage.Errors;

namespace OrleansStorage.DataPort;

/// <summary>
/// Errors across the data port: a server turns an exception into a status, a value and a message;
/// a client turns them back into the exception the grain interface would have thrown, so that
/// retries, NBD error codes and messages are the same through either door.
/// </summary>
public static class DataErrors
{
    public static (DataStatus Status, long Value) Classify(Exception error) => error switch
    {
        StaleEpochException stale => (DataStatus.StaleEpoch, stale.ServerEpoch),
        MisdirectedRequestException => (DataStatus.Misdirected, 0),
        VolumeNotFoundException => (DataStatus.VolumeNotFound, 0),
        InvalidRequestException => (DataStatus.InvalidRequest, 0),
        DataCorruptException => (DataStatus.DataCorrupt, 0),
        AccessDeniedException => (DataStatus.AccessDenied, 0),
        TicketRevokedException => (DataStatus.TicketRevoked, 0),
        VolumeThrottledException throttled => (DataStatus.Throttled, (long)Math.Ceiling(throttled.RetryAfter.TotalMilliseconds)),
        ReadThroughException => (DataStatus.ReadThrough, 0),
        IOException or DiskFailedException => (DataStatus.IoError, 0),
        _ => (DataStatus.Unavailable, 0),
    };

    /// <param name="requestEpoch">The epoch the request carried, for a stale-epoch error.</param>
    public static Exception ToException(DataStatus status, long value, string message, long requestEpoch, string hostId) => status switch
    {
        DataStatus.StaleEpoch => new StaleEpochException(requestEpoch, value, hostId),
        DataStatus.Misdirected => MisdirectedRequestException.FromMessage(message, hostId, requestEpoch),
        DataStatus.VolumeNotFound => VolumeNotFoundException.FromMessage(message),
        DataStatus.InvalidRequest => new InvalidRequestException(message),
        DataStatus.DataCorrupt => new DataCorruptException(message),
        DataStatus.AccessDenied => AccessDeniedException.FromMessage(message),
        DataStatus.TicketRevoked => new TicketRevokedException(message),
        DataStatus.Throttled => VolumeThrottledException.FromMessage(message, TimeSpan.FromMilliseconds(value)),
        DataStatus.ReadThrough => new ReadThroughException(message),
        // Unavailable, an I/O error and anything newer: worth a retry on a fresh map.
        _ => new StorageException(message),
    };
}
