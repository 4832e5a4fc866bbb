using System.Collections.Immutable;
using Microsoft.Extensions.Logging;
using OrleansStorage.Logging;
using OrleansStorage.Maps;

namespace OrleansStorage.Management;

/// <summary>
/// What the management service tells those who watch the cluster: the epoch mismatch counts,
/// persisted beside the map so that a failover keeps counting; the last map changes with their
/// reasons; and the metrics of the silo it runs on.
/// </summary>
public sealed partial class ManagementGrain
{
    /// <summary>The state name of the mismatch counts, a row of their own: a report never rewrites the map.</summary>
    private const string MismatchStateName = "mismatches";

    private readonly Queue<MapChange> _recentChanges = new();
    private GrainState<MismatchCounts> _mismatchState = new(new MismatchCounts());
    private ImmutableDictionary<string, long> _mismatches = ImmutableDictionary<string, long>.Empty.WithComparers(StringComparer.Ordinal);
    private bool _mismatchesDirty;
    private Task _mismatchSave = Task.CompletedTask;

    public Task<MapChange[]> GetRecentChangesAsync() => Task.FromResult(_recentChanges.ToArray());

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        metrics.Stopped();
        // The last counts go with a graceful end (a killed host loses what it had not written yet).
        await _mismatchSave;
        if (_mismatchesDirty)
        {
            await SaveMismatchesAsync();
        }
    }

    /// <summary>Reads the counts the last activation persisted; the metrics start from them.</summary>
    private async Task LoadMismatchesAsync()
    {
        await FromDatabaseAsync(async () =>
        {
            await _storage.ReadStateAsync(MismatchStateName, this.GetGrainId(), _mismatchState);
            return true;
        });
        _mismatchState.State ??= new MismatchCounts();
        _mismatches = _mismatchState.State.ByHost.ToImmutableDictionary(StringComparer.Ordinal);
        metrics.Serving(_map, _mismatches);
        RememberChange(_map.Epoch, $"the management service started on {(LocalHostId.Length > 0 ? LocalHostId : silo.SiloAddress.ToString())} with the persisted map");
    }

    private void CountMismatch(string hostId)
    {
        _mismatches = _mismatches.SetItem(hostId, _mismatches.GetValueOrDefault(hostId) + 1);
        metrics.Serving(_map, _mismatches);
        _mismatchesDirty = true;
        if (_mismatchSave.IsCompleted)
        {
            _mismatchSave = SaveMismatchesAsync();
        }
    }

    /// <summary>
    /// Writes the counts until what is written is the latest; one write at a time (reports
    /// interleave), so a burst of reports costs a write or two, not one each.
    /// </summary>
    private async Task SaveMismatchesAsync()
    {
        try
        {
            while (_mismatchesDirty)
            {
                _mismatchesDirty = false;
                _mismatchState.State = new MismatchCounts { ByHost = new Dictionary<string, long>(_mismatches, StringComparer.Ordinal) };
                await _storage.WriteStateAsync(MismatchStateName, this.GetGrainId(), _mismatchState);
            }
        }
        catch (Exception ex)
        {
            // Kept in memory and written with the next report. The row is read again for its ETag
            // (a write that lost a race would otherwise fail forever), keeping the larger count of each host.
            _mismatchesDirty = true;
            Log.MismatchesNotSaved(logger, ex);
            await ReloadMismatchesAsync();
        }
    }

    private async Task ReloadMismatchesAsync()
    {
        var stored = new GrainState<MismatchCounts>(new MismatchCounts());
        try
        {
            await _storage.ReadStateAsync(MismatchStateName, this.GetGrainId(), stored);
        }
        catch (Exception ex)
        {
            Log.MismatchesNotSaved(logger, ex);
            return;
        }
        _mismatchState.ETag = stored.ETag;
        foreach (var (host, count) in stored.State?.ByHost ?? [])
        {
            if (count > _mismatches.GetValueOrDefault(host))
            {
                _mismatches = _mismatches.SetItem(host, count);
            }
        }
    }

    /// <summary>A map change is persisted: the feed, the metrics and the next push follow it.</summary>
    private void Committed(ClusterMap map, string change)
    {
        RememberChange(map.Epoch, change);
        metrics.MapChanged();
        metrics.Serving(map, _mismatches);
    }

    private void RememberChange(long epoch, string reason)
    {
        _recentChanges.Enqueue(new MapChange(epoch, Now, reason));
        while (_recentChanges.Count > MapChanges.Kept)
        {
            _recentChanges.Dequeue();
        }
    }
}

/// <summary>The epoch mismatch reports counted per reporting host, as persisted.</summary>
[GenerateSerializer, Alias("ostor.MismatchCounts")]
public sealed class MismatchCounts
{
    [Id(0)] public Dictionary<string, long> ByHost { get; set; } = new(StringComparer.Ordinal);
}
