using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Storage;
using Orleans.Streams;
using OrleansStorage.Errors;
using OrleansStorage.Identity;
using OrleansStorage.Leases;
using OrleansStorage.Logging;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Telemetry;

namespace OrleansStorage.Management;

/// <summary>
/// The management service. Mutations run one at a time (the grain is not reentrant): each
/// computes the next map, persists it (epoch + 1) and only then makes it visible. Reads of the map
/// and mismatch reports interleave with them and see only the last persisted map
/// (<see cref="_map"/>), never one whose write is still in flight. A write that fails, or loses
/// the race with another activation, publishes nothing and deactivates the grain, so the next
/// activation reloads what PostgreSQL holds (docs/epoch-protocol.md).
/// A timer compares the map with Orleans silo membership and drives recovery
/// (ManagementGrain.Reconcile.cs).
/// </summary>
[GrainType("ostor-management")]
public sealed partial class ManagementGrain(
    IClusterIdentityStore identities,
    IOptions<ManagementOptions> options,
    IOptions<ClusterOptions> clusterOptions,
    IClusterMembershipService membership,
    ISiloMetadataCache siloMetadata,
    ILocalSiloDetails silo,
    IOptions<LeaseOptions> leaseOptions,
    TimeProvider clock,
    ManagementMetrics metrics,
    ILogger<ManagementGrain> logger) : Grain, IManagementServiceGrain
{
    /// <summary>The state name the map has always been stored under (it was a [PersistentState] of this name).</summary>
    internal const string StateName = "cluster";

    /// <summary>How long management waits on a storage server; a dead one must not stall it.</summary>
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How long a volume deletion or a map recovery waits on each host: under the client's default
    /// request timeout (5 s), so the caller hears management's answer rather than a timeout while a
    /// host restarts. A host that purges later confirms on its own when it adopts the map.
    /// </summary>
    private static readonly TimeSpan HostAnswerTimeout = TimeSpan.FromSeconds(3);

    private readonly ClusterMapTransitions _transitions = new(options.Value);
    private readonly List<CopyCompletion> _completedCopies = [];
    private readonly List<(string HostId, Guid VolumeId)> _confirmedPurges = [];
    private IGrainStorage _storage = null!;
    private LeaseTable _leases = null!;

    /// <summary>A map write is in flight: a lease renewal may see the database ahead of <see cref="_map"/> for a moment.</summary>
    private bool _writing;
    private GrainState<ManagementState> _state = new(new ManagementState());
    private IAsyncStream<ClusterMap>? _stream;
    private DateTimeOffset _activatedAt;
    private long _activatedAtEpoch;

    /// <summary>The last map that PostgreSQL holds: the only one anybody may see.</summary>
    private ClusterMap _map = ClusterMap.Empty;

    /// <summary>Set when a write failed: this activation's view may be behind the database; it only deactivates now.</summary>
    private string? _failure;

    /// <summary>Set when a write failed without an answer: no change until the database answers, then a new activation.</summary>
    private string? _unsettledWrite;

    /// <summary>When <see cref="_unsettledWrite"/> was set: only a read started later shows the database answering again.</summary>
    private long _unsettledSince;

    /// <summary>A snapshot is being committed (<see cref="CreateSnapshotAsync"/>).</summary>
    private bool _committingSnapshot;

    private DateTimeOffset Now => clock.GetUtcNow();

    private string Deployment => clusterOptions.Value.ClusterId;

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // First: leases granted by an earlier activation are bounded from this moment on.
        _leases = new LeaseTable(leaseOptions.Value, clock);
        _confirmation = new MapConfirmation(clock, options.Value.MapConfirmationLimit);
        _storage = ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.ClusterStore);
        var readStarted = _confirmation.Start();
        // Bounded like the confirmation timer's reads: an activation placed on a silo cut off from
        // the database fails soon, and the next one is placed again (maybe where it answers).
        var identity = await FromDatabaseAsync(async () =>
        {
            await _storage.ReadStateAsync(StateName, this.GetGrainId(), _state);
            return await identities.ReadAsync(cancellationToken);
        }).WaitAsync(_confirmation.Limit * StepAsideAfterLimits, cancellationToken);
        _state.State ??= new ManagementState();
        _confirmation.Proved(readStarted);
        _map = (_state.State.Map ?? ClusterMap.Empty).Normalized();
        _activatedAt = Now;
        _activatedAtEpoch = _map.Epoch;
        _stream = this.GetStreamProvider(ClusterMapStream.ProviderName)
            .GetStream<ClusterMap>(StreamId.Create(ClusterMapStream.Namespace, ClusterMapStream.Key));
        await CheckIdentityAsync(identity);
        await LoadMismatchesAsync();
        await FenceAsync();
        var interval = options.Value.ReconcileInterval;
        this.RegisterGrainTimer(ReconcileAsync, new GrainTimerCreationOptions(interval, interval) { KeepAlive = true });
        StartConfirming();
        // Last: writers registered with an earlier activation are heard from within one renewal from now.
        _writerPauses = new VolumeWriterPauses(clock, _map.Volumes.Select(v => v.VolumeId), WriterHoldLimit);
        AskHostsToRenew();
        Log.ManagementActivated(logger, _map.Epoch, _map.Hosts.Length, _map.Volumes.Length);
    }

    /// <summary>
    /// The database's identity and map must belong together and to this deployment. A map from
    /// before cluster identities gets one; a map without its identity row gets it back.
    /// </summary>
    private async Task CheckIdentityAsync(ClusterIdentity? identity)
    {
        if (identity is not null && !string.Equals(identity.DeploymentId, Deployment, StringComparison.Ordinal))
        {
            throw new ForeignClusterException(
                $"the database holds cluster {identity.ClusterId} of Orleans cluster id '{identity.DeploymentId}'; this is '{Deployment}', which must not change its map");
        }
        if (_map.Epoch == 0)
        {
            return; // nothing formed yet: a fresh host's registration forms it, or recover-map rebuilds it
        }
        if (identity is not null && !_map.IsUnformed && identity.ClusterId != _map.ClusterId)
        {
            throw new ForeignClusterException($"the database's cluster identity ({identity.ClusterId}) and its map (cluster {_map.ClusterId}) disagree; refusing to serve either");
        }
        var recorded = await RecordIdentityAsync(_map.IsUnformed ? identity?.ClusterId ?? Guid.NewGuid() : _map.ClusterId);
        if (_map.IsUnformed)
        {
            await CommitAsync(_map with { Epoch = _map.Epoch + 1, ClusterId = recorded.ClusterId }, $"the map from before cluster identities is cluster {recorded.ClusterId}");
        }
    }

    /// <summary>Records the identity unless one is recorded; the recorded one must be this cluster's.</summary>
    private async Task<ClusterIdentity> RecordIdentityAsync(Guid clusterId)
    {
        var recorded = await FromDatabaseAsync(() => identities.CreateAsync(new ClusterIdentity(clusterId, Deployment, Now)));
        if (recorded.ClusterId != clusterId || !string.Equals(recorded.DeploymentId, Deployment, StringComparison.Ordinal))
        {
            throw new ForeignClusterException($"the database already records cluster {recorded.ClusterId} of Orleans cluster id '{recorded.DeploymentId}', not cluster {clusterId}");
        }
        return recorded;
    }

    public Task<ClusterMap> GetMapAsync()
    {
        ThrowIfFailed();
        return Task.FromResult(_map);
    }

    /// <summary>
    /// Answers even while the database is away (status is how an operator learns that): then it
    /// says so, and carries the map this activation holds, unconfirmed, for display only.
    /// </summary>
    public Task<ManagementStatus> GetStatusAsync()
    {
        var age = _confirmation.Age;
        DateTimeOffset? lastReached = age == TimeSpan.MaxValue ? null : Now - age;
        var problem = DatabaseProblem(age, lastReached);
        return Task.FromResult(new ManagementStatus(
            silo.SiloAddress.ToString(), _map.Epoch, _activatedAtEpoch, _activatedAt, LocalHostId,
            lastReached, problem, Unconfirmed() is null ? null : _map));
    }

    /// <summary>The host whose silo runs the management service (its silo metadata names it).</summary>
    private string LocalHostId =>
        siloMetadata.GetSiloMetadata(silo.SiloAddress).Metadata.GetValueOrDefault(Placement.HostPinnedPlacementDirector.HostIdMetadataKey) ?? "";

    public Task<IReadOnlyList<HostReport>> GetHostsAsync() =>
        Task.FromResult<IReadOnlyList<HostReport>>(
            _map.Hosts.Select(h => new HostReport(h, _mismatches.GetValueOrDefault(h.HostId))).ToList());

    public Task ReportMismatchAsync(EpochMismatch mismatch)
    {
        Log.MismatchReported(logger, mismatch.ReportingHostId, mismatch.ServerEpoch, mismatch.RequestEpoch, _map.Epoch);
        CountMismatch(mismatch.ReportingHostId);
        if (mismatch.ServerEpoch < _map.Epoch && _map.FindHost(mismatch.ReportingHostId) is not null)
        {
            // The reporting server is behind: tell it straight away, not waiting for a push. It
            // pulls the persisted map itself; no map travels with the hint.
            GrainFactory.GetGrain<IStorageServerGrain>(mismatch.ReportingHostId).RefreshMapAsync(_map.Epoch).Ignore();
        }
        return Task.CompletedTask;
    }

    /// <summary>
    /// Persist, then make visible and publish. A map with the current epoch is no change and is not
    /// written. A failed write publishes nothing: the state goes back to the persisted map, this
    /// activation refuses further changes and deactivates, and the next one reloads from PostgreSQL.
    /// </summary>
    private async Task CommitAsync(ClusterMap next, string change)
    {
        ThrowIfFailed();
        if (next.Epoch == _map.Epoch)
        {
            return;
        }
        if (!SameHosts(_map, next))
        {
            await RequireWitnessedAsync("a change of the map's hosts");
        }
        next = ClusterMapTransitions.StampPrimaryChanges(_map, next); // read by hosts' leases after a failover
        var state = _state.State!;
        var persisted = state.Map;
        state.Map = next;
        _writing = true;
        var writeStarted = _confirmation.Start();
        try
        {
            // Bounded: a write the database never answers must not hold every later change.
            await _storage.WriteStateAsync(StateName, this.GetGrainId(), _state).WaitAsync(_confirmation.Limit * StepAsideAfterLimits);
            _confirmation.Proved(writeStarted);
        }
        catch (Exception ex)
        {
            state.Map = persisted;
            // An etag conflict means the database refused the write; any other failure may have
            // come after the database wrote the map (its answer lost): the outcome is unknown.
            _writeOfUnknownOutcome = ex is InconsistentStateException ? null : next;
            Log.CommitFailed(logger, ex, next.Epoch, change);
            if (ex is InconsistentStateException)
            {
                _failure = "another activation changed the map first; it is being reloaded, try again";
                DeactivateOnIdle();
            }
            else if (_committingSnapshot || await DatabaseAnswersAsync())
            {
                // A snapshot whose commit may have landed must not stay open behind leases that go
                // on: its writers are held only so long past a primary's lease (docs/snapshots.md).
                _failure = $"the database did not answer ({ex.Message})";
                DeactivateOnIdle();
            }
            else
            {
                // The database may hold the map or not, and is away: this activation changes
                // nothing more, and deactivates once the database answers again, for one that
                // loads what it holds. Until then it goes on granting leases on its witnesses (the
                // database is likely down for everyone, and nobody else could load the map
                // meanwhile); an activation that loads the map bounds those leases like any other.
                _unsettledWrite = $"the database did not answer ({ex.Message}), and may or may not hold the change to epoch {next.Epoch}; changes wait until it answers";
                _unsettledSince = clock.GetTimestamp();
            }
            ThrowIfFailed();
        }
        finally
        {
            _writing = false;
        }
        var previous = _map;
        _map = next;
        _leases.MapChanged(previous, next);
        Log.MapChanged(logger, next.Epoch, change);
        Committed(next, change);
        try
        {
            await _stream!.OnNextAsync(next);
            metrics.Pushed(sent: true);
        }
        catch (Exception ex)
        {
            metrics.Pushed(sent: false);
            Log.PublishFailed(logger, ex, next.Epoch);
        }
    }

    private static bool SameHosts(ClusterMap a, ClusterMap b) =>
        a.Hosts.Select(h => h.HostId).Order(StringComparer.Ordinal).SequenceEqual(b.Hosts.Select(h => h.HostId).Order(StringComparer.Ordinal), StringComparer.Ordinal);

    /// <summary>Whether a read of the stored map gets an answer within the confirmation limit, whatever it holds.</summary>
    private async Task<bool> DatabaseAnswersAsync()
    {
        try
        {
            await _storage.ReadStateAsync(StateName, this.GetGrainId(), new GrainState<ManagementState>(new ManagementState())).WaitAsync(_confirmation.Limit);
            return true;
        }
        catch (Exception)
        {
            return false; // no answer, whatever the failure: the caller only asks whether the database is there
        }
    }

    /// <summary>The map whose write failed without telling whether the database holds it (its answer lost), if any.</summary>
    private ClusterMap? _writeOfUnknownOutcome;

    /// <summary>
    /// Whether the database may hold <paramref name="next"/>'s epoch although its commit failed. By
    /// epoch, not by reference: the commit writes the map with its primaries stamped, a copy.
    /// </summary>
    private bool WriteMayHaveLanded(ClusterMap next) => _writeOfUnknownOutcome is { } unknown && unknown.Epoch == next.Epoch;

    /// <summary>Refuses to answer for the map: after a failed write, or when the database has not confirmed it for too long.</summary>
    private void ThrowIfFailed()
    {
        if ((_failure ?? _unsettledWrite ?? Unconfirmed()) is { } refusal)
        {
            throw new ManagementUnavailableException(refusal);
        }
    }

    /// <summary>Runs a database call; what the database throws (Npgsql, I/O) becomes our typed error, never crossing the wire as itself.</summary>
    private static async Task<T> FromDatabaseAsync<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (Exception ex) when (ex is not StorageException)
        {
            throw new ManagementUnavailableException($"the database did not answer ({ex.Message})");
        }
    }
}
