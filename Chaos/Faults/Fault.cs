namespace OrleansStorage.Chaos.Faults;

public enum FaultKind
{
    /// <summary>kill -9 of a host's silo process, restarted after a while.</summary>
    KillHost,

    /// <summary>kill -9 of the host whose silo runs the management service: a failover.</summary>
    KillManagement,

    /// <summary>PostgreSQL stopped (membership, the map) and started again.</summary>
    StopDatabase,

    /// <summary>A host cut off from the other hosts and the database (infra/partition), then healed.</summary>
    Partition,

    /// <summary>
    /// A host's disk refuses every write (<c>chattr -R +i</c> on its volumes, EPERM even through open
    /// files, as a file system remounted read-only): it must stop serving and go Out. Then the disk is
    /// writable again and the host is killed and restarted: it joins empty and is refilled.
    /// </summary>
    ReadOnlyDisk,

    /// <summary>
    /// A host loses power: kill -9, and at its restart its volumes are rolled back to what its
    /// fsyncs made durable (the silo records that for fault tests: Storage:RecordDurableImage), so
    /// whatever only the page cache held is gone.
    /// </summary>
    PowerCut,

    /// <summary>Every host loses power at once (a site's outage): each is killed and rolled back as in <see cref="PowerCut"/>.</summary>
    ClusterPowerCut,

    /// <summary>
    /// A host's disk fails every fsync (a dying disk, as the store's fault seam has it): it must
    /// stop serving and go Out. Then fsyncs succeed again and the host is killed and restarted, and
    /// joins empty, as after <see cref="ReadOnlyDisk"/>.
    /// </summary>
    FailingFsync,
}

/// <summary>One fault as it happened: when it began, when it was healed (null while it lasts), and what was done.</summary>
public sealed record Fault(int Id, FaultKind Kind, int Host, TimeSpan Started, TimeSpan? Healed, string Detail)
{
    public override string ToString() =>
        $"fault {Id}: [{Started.TotalSeconds,8:0.000} .. {(Healed is { } h ? $"{h.TotalSeconds,8:0.000}" : "  (open)")}] {Detail}";
}

/// <summary>The faults of a run, in order, as the injector records them (thread-safe: the report reads while it writes).</summary>
public sealed class FaultLog
{
    private readonly List<Fault> _faults = [];
    private readonly Lock _lock = new();

    public Fault Begin(FaultKind kind, int host, TimeSpan at, string detail)
    {
        lock (_lock)
        {
            var fault = new Fault(_faults.Count + 1, kind, host, at, null, detail);
            _faults.Add(fault);
            return fault;
        }
    }

    public void End(Fault fault, TimeSpan at, string? detail = null)
    {
        lock (_lock)
        {
            _faults[fault.Id - 1] = _faults[fault.Id - 1] with { Healed = at, Detail = detail ?? _faults[fault.Id - 1].Detail };
        }
    }

    public IReadOnlyList<Fault> All()
    {
        lock (_lock)
        {
            return [.. _faults];
        }
    }

    /// <summary>Faults in force at any moment of [from - margin, to + margin].</summary>
    public IReadOnlyList<Fault> Around(TimeSpan from, TimeSpan to, TimeSpan margin) =>
        [.. All().Where(f => f.Started <= to + margin && (f.Healed ?? TimeSpan.MaxValue) >= from - margin)];
}
