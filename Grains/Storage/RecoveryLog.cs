using System.Collections.Immutable;

namespace OrleansStorage.Storage;

/// <summary>
/// The copies this host finished (or gave up) as a primary, newest last. A silo-wide singleton
/// rather than grain state: Orleans may deactivate and re-activate the storage server (e.g. when
/// the silo holding its directory entry dies), and the record must outlive that.
/// </summary>
public sealed class RecoveryLog
{
    private const int Kept = 512;
    private readonly Lock _gate = new();
    private readonly Queue<CopyProgress> _finished = new();

    public void Add(CopyProgress copy)
    {
        lock (_gate)
        {
            _finished.Enqueue(copy);
            while (_finished.Count > Kept)
            {
                _finished.Dequeue();
            }
        }
    }

    public ImmutableArray<CopyProgress> Recent()
    {
        lock (_gate)
        {
            return [.. _finished];
        }
    }
}
