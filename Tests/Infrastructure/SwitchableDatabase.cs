using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Storage;
using OrleansStorage.Hosting;
using OrleansStorage.Management;
using OrleansStorage.Silo.Hosting;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// Cuts the cluster's grain storage (the map's and the grants') off from every silo, or from one
/// host's, as <c>infra/partition</c> cuts a host off from PostgreSQL: while cut, reads and writes
/// get no answer until <see cref="Heal"/>, then go on to the database.
/// </summary>
public sealed class SwitchableDatabase
{
    private readonly Lock _gate = new();
    private TaskCompletionSource? _cut;
    private string? _onlyHost;
    private int _held;

    /// <summary>Cuts every silo off, or with <paramref name="onlyHost"/> only that host's.</summary>
    public void CutOff(string? onlyHost = null)
    {
        lock (_gate)
        {
            _cut ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _onlyHost = onlyHost;
        }
    }

    public void Heal()
    {
        TaskCompletionSource? cut;
        lock (_gate)
        {
            cut = _cut;
            _cut = null;
        }
        cut?.TrySetResult();
    }

    /// <summary>Calls that reached the storage while it was cut off.</summary>
    public int Held => Volatile.Read(ref _held);

    internal Task PassAsync(string hostId)
    {
        Task? cut;
        lock (_gate)
        {
            cut = _onlyHost is null || _onlyHost == hostId ? _cut?.Task : null;
        }
        if (cut is null)
        {
            return Task.CompletedTask;
        }
        Interlocked.Increment(ref _held);
        return cut;
    }
}

/// <summary>The cluster's grain storage of host <paramref name="hostId"/>'s silo behind a <see cref="SwitchableDatabase"/>.</summary>
public sealed class SwitchableGrainStorage(IGrainStorage inner, SwitchableDatabase database, string hostId) : IGrainStorage
{
    public async Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await database.PassAsync(hostId);
        await inner.ReadStateAsync(stateName, grainId, grainState);
    }

    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await database.PassAsync(hostId);
        await inner.WriteStateAsync(stateName, grainId, grainState);
    }

    public async Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await database.PassAsync(hostId);
        await inner.ClearStateAsync(stateName, grainId, grainState);
    }
}

/// <summary>A storage cluster whose grain storage can be cut off (<see cref="Database"/>), with a short <see cref="ManagementOptions.MapConfirmationLimit"/>.</summary>
public sealed class SwitchableDatabaseFixture : StorageClusterFixture
{
    public static readonly TimeSpan ConfirmationLimit = TimeSpan.FromSeconds(1);

    public SwitchableDatabase Database { get; } = new();

    protected override string PostgresClusterStoreName => GatedMapWritesFixture.InnerStoreName;

    protected override void ConfigureSilo(ISiloBuilder silo)
    {
        var database = Database;
        silo.Services.AddKeyedSingleton<IGrainStorage>(StorageNames.ClusterStore, (sp, _) =>
            new SwitchableGrainStorage(sp.GetRequiredKeyedService<IGrainStorage>(GatedMapWritesFixture.InnerStoreName), database,
                sp.GetRequiredService<IOptions<StorageServerOptions>>().Value.HostId));
        silo.Services.Configure<ManagementOptions>(o => o.MapConfirmationLimit = ConfirmationLimit);
    }
}
