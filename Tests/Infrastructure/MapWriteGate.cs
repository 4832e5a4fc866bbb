using Microsoft.Extensions.DependencyInjection;
using Orleans.Storage;
using OrleansStorage.Silo.Hosting;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// Holds the management service's next write of the map open until the test releases it, as a
/// slow or failing database would, so tests can look at what readers see meanwhile.
/// </summary>
public sealed class MapWriteGate
{
    private readonly Lock _gate = new();
    private TaskCompletionSource<bool>? _held;
    private TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _failAfterWrite;

    /// <summary>Review: the held write reaches the database, then its answer is lost (an ambiguous failure).</summary>
    public void ReleaseAfterWriteFailing()
    {
        _failAfterWrite = true;
        Release(fail: false);
    }

    internal bool TakeFailAfterWrite()
    {
        var f = _failAfterWrite;
        _failAfterWrite = false;
        return f;
    }

    /// <summary>The next write waits for <see cref="Release"/>.</summary>
    public void Hold()
    {
        lock (_gate)
        {
            _held = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            _arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    /// <summary>Completes when a held write has reached the storage.</summary>
    public Task Arrived
    {
        get
        {
            lock (_gate)
            {
                return _arrived.Task;
            }
        }
    }

    /// <summary>Lets the held write go on, or fail as a database error.</summary>
    public void Release(bool fail)
    {
        TaskCompletionSource<bool>? held;
        lock (_gate)
        {
            held = _held;
            _held = null;
        }
        held?.TrySetResult(fail);
    }

    internal async Task PassAsync()
    {
        Task<bool>? held;
        lock (_gate)
        {
            held = _held?.Task;
            _arrived.TrySetResult();
        }
        if (held is not null && await held)
        {
            throw new IOException("injected: the database write failed");
        }
    }
}

/// <summary>The map's grain storage behind a <see cref="MapWriteGate"/>.</summary>
public sealed class GatedGrainStorage(IGrainStorage inner, MapWriteGate gate) : IGrainStorage
{
    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ReadStateAsync(stateName, grainId, grainState);

    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await gate.PassAsync();
        await inner.WriteStateAsync(stateName, grainId, grainState);
        if (gate.TakeFailAfterWrite())
        {
            throw new IOException("injected: the database wrote the map, its answer was lost");
        }
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ClearStateAsync(stateName, grainId, grainState);
}

/// <summary>A storage cluster whose map writes go through a <see cref="MapWriteGate"/>; the PostgreSQL storage stays reachable under <see cref="InnerStoreName"/>.</summary>
public sealed class GatedMapWritesFixture : StorageClusterFixture
{
    public const string InnerStoreName = "ostor-postgres";

    public MapWriteGate Gate { get; } = new();

    protected override string PostgresClusterStoreName => InnerStoreName;

    protected override void ConfigureSilo(ISiloBuilder silo)
    {
        var gate = Gate;
        silo.Services.AddKeyedSingleton<IGrainStorage>(StorageNames.ClusterStore, (sp, _) =>
            new GatedGrainStorage(sp.GetRequiredKeyedService<IGrainStorage>(InnerStoreName), gate));
    }
}
