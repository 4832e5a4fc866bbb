using OrleansStorage.Storage;

namespace OrleansStorage.DataPort;

/// <summary>
/// The storage server as the data port sees it: the same admission, ordering and store as its
/// grain methods, run on its own scheduler. A read fills the caller's (pooled) buffer instead of
/// returning a new one.
/// </summary>
internal interface IDataDoor
{
    Task ReadAsync(SegmentRead request, Memory<byte> destination);

    Task WriteAsync(SegmentWrite request);

    Task TrimAsync(SegmentTrim request);

    Task FlushAsync(long epoch, Guid volumeId);

    Task<DataExtent[]> GetAllocationAsync(SegmentRead request);

    Task ReplicaWriteAsync(SegmentWrite request);

    Task ReplicaTrimAsync(SegmentTrim request);

    /// <summary>A read of a snapshot; the request's segment names the snapshot's id in place of the volume's.</summary>
    Task ReadSnapshotAsync(SegmentRead request, Memory<byte> destination);

    Task<DataExtent[]> GetSnapshotAllocationAsync(SegmentRead request);

    Task ReplicaPreserveAsync(SegmentPreserve request);

    /// <summary>A clone's segment's first contents, the whole segment from offset 0.</summary>
    Task MaterializeAsync(SegmentWrite request);

    Task ReplicaMaterializeAsync(SegmentWrite request);

    /// <summary>The map this host adopted, as saved on its disk (serialized), and its epoch.</summary>
    Task<(byte[] Map, long Epoch)> GetMapAsync();
}
