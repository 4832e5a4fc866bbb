namespace OrleansStorage.Client.Library;

/// <summary>
/// Which hosts took writes of each volume from this client since its last flush of it, so that a
/// flush goes only to them (a database's commit flushes after every write). Until this client has
/// flushed a volume once, every host of the volume may hold its writes (from before it started
/// keeping track), so that first flush goes to all of them.
/// </summary>
internal sealed class UnflushedHosts
{
    private readonly Lock _gate = new();
    private readonly Dictionary<Guid, HashSet<string>> _hosts = [];
    private readonly HashSet<Guid> _tracked = [];

    /// <summary>
    /// A write about to be sent to <paramref name="hosts"/>: they hold it until a flush. Dispose the
    /// scope when the write has ended (before it is acknowledged): a flush that overlapped the write
    /// took the hosts from the record but owed the write nothing, so they are noted again for the
    /// flush that does owe it.
    /// </summary>
    public WriteInFlight BeginWrite(Guid volumeId, IEnumerable<string> hosts)
    {
        Note(volumeId, hosts);
        return new WriteInFlight(this, volumeId, hosts);
    }

    /// <summary>Before a write is sent: these hosts will hold it until a flush.</summary>
    public void Note(Guid volumeId, IEnumerable<string> hosts)
    {
        lock (_gate)
        {
            if (!_hosts.TryGetValue(volumeId, out var set))
            {
                _hosts[volumeId] = set = new HashSet<string>(StringComparer.Ordinal);
            }
            set.UnionWith(hosts);
        }
    }

    /// <summary>The hosts a flush must reach, taken from the record; null: every host of the volume.</summary>
    public HashSet<string>? Take(Guid volumeId)
    {
        lock (_gate)
        {
            _hosts.Remove(volumeId, out var set);
            return _tracked.Contains(volumeId) ? set ?? [] : null;
        }
    }

    /// <summary>The flush of what <see cref="Take"/> gave succeeded: from now on the record is complete.</summary>
    public void Flushed(Guid volumeId)
    {
        lock (_gate)
        {
            _tracked.Add(volumeId);
        }
    }

    /// <summary>The flush failed: its hosts still hold unflushed writes.</summary>
    public void Restore(Guid volumeId, HashSet<string>? hosts)
    {
        if (hosts is not null)
        {
            Note(volumeId, hosts);
        }
    }

    /// <summary>A write in flight to some hosts; see <see cref="BeginWrite"/>.</summary>
    public readonly struct WriteInFlight(UnflushedHosts record, Guid volumeId, IEnumerable<string> hosts) : IDisposable
    {
        public void Dispose() => record?.Note(volumeId, hosts);
    }
}
