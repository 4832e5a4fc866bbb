using OrleansStorage.DataPort;

namespace OrleansStorage.Storage;

/// <summary>
/// The storage server's fast door (docs/data-protocol.md): the data port hands each request to
/// the same methods the grain interface serves, queued on this activation's own task scheduler, so
/// they interleave with grain calls exactly as reentrant grain calls do and see one state. The
/// primary's forwards to the other replicas go out over their data ports.
/// </summary>
public sealed partial class StorageServerGrain
{
    private DataDoor? _door;

    /// <summary>Opens the data port's door on this activation; called at the end of activation, on the grain's scheduler.</summary>
    private void OpenDataDoor()
    {
        _door = new DataDoor(this, TaskScheduler.Current);
        dataPort.Open(_door);
    }

    private void CloseDataDoor()
    {
        if (_door is not null)
        {
            dataPort.Close(_door);
        }
    }

    /// <summary>Sends a primary's forward to one replica over its data port.</summary>
    private Task ForwardOverDataPortAsync(string hostId, DataRequestHeader request, ReadOnlyMemory<byte> payload) =>
        peers.SendAsync(_map, hostId, request, payload);

    /// <summary>
    /// The map this host adopted, serialized as its disk holds it, for the data port's Map
    /// operation: a client that this host refused as stale takes it when management answers older.
    /// </summary>
    private (byte[] Map, long Epoch) AdoptedMap() => (disk.Serialize(_map), _map.Epoch);

    private async Task ReadIntoAsync(SegmentRead request, Memory<byte> destination)
    {
        var volume = await AdmitReadAsync(request);
        await ReadAdmittedAsync(request, volume, destination);
    }

    private sealed class DataDoor(StorageServerGrain grain, TaskScheduler scheduler) : IDataDoor
    {
        public Task ReadAsync(SegmentRead request, Memory<byte> destination) => Run(() => grain.ReadIntoAsync(request, destination));

        public Task WriteAsync(SegmentWrite request) => Run(() => grain.WriteAsync(request));

        public Task TrimAsync(SegmentTrim request) => Run(() => grain.TrimAsync(request));

        public Task FlushAsync(long epoch, Guid volumeId) => Run(() => grain.FlushAsync(epoch, volumeId));

        public Task<DataExtent[]> GetAllocationAsync(SegmentRead request) => Run(() => grain.GetAllocationAsync(request));

        public Task ReplicaWriteAsync(SegmentWrite request) => Run(() => grain.ReplicaWriteAsync(request));

        public Task ReplicaTrimAsync(SegmentTrim request) => Run(() => grain.ReplicaTrimAsync(request));

        public Task ReadSnapshotAsync(SegmentRead request, Memory<byte> destination) => Run(() => grain.ReadSnapshotIntoAsync(request, destination));

        public Task<DataExtent[]> GetSnapshotAllocationAsync(SegmentRead request) => Run(() => grain.GetSnapshotAllocationAsync(request));

        public Task ReplicaPreserveAsync(SegmentPreserve request) => Run(() => grain.ReplicaPreserveAsync(request));

        public Task MaterializeAsync(SegmentWrite request) => Run(() => grain.MaterializeAsync(request));

        public Task ReplicaMaterializeAsync(SegmentWrite request) => Run(() => grain.ReplicaMaterializeAsync(request));

        public Task<(byte[] Map, long Epoch)> GetMapAsync() => Run(() => Task.FromResult(grain.AdoptedMap()));

        private Task Run(Func<Task> work) => Run(async () =>
        {
            await work();
            return true;
        });

        private Task<T> Run<T>(Func<Task<T>> work) =>
            Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler).Unwrap();
    }
}
