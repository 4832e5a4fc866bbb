using System.Collections.Concurrent;
using OrleansStorage.Files;
using OrleansStorage.Segments;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A power cut for the segment stores of in-process hosts: each host's fsyncs are recorded in a
/// <see cref="DurableImage"/> beside its volumes (the one infra/chaos uses on real processes).
/// <see cref="PowerOff"/> stops recording (later fsyncs never happened);
/// <see cref="RestoreAfterPowerLoss"/> then puts the host's volumes back to what was durable.
/// </summary>
public sealed class PowerLossSimulator : IDiskFaults
{
    private readonly ConcurrentDictionary<string, DurableImage> _hosts = new(StringComparer.Ordinal);

    public bool FailsFsync(string hostId, string path)
    {
        // A host records from its baseline on; fsyncs before it are part of what the baseline finds.
        if (_hosts.TryGetValue(hostId, out var image))
        {
            image.Synced(path);
        }
        return false;
    }

    /// <summary>What is on disk under <paramref name="volumesRoot"/> now is durable (a host about to start on it).</summary>
    public void Baseline(string hostId, string volumesRoot)
    {
        var imageDirectory = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(volumesRoot))!, Hosting.StorageServerOptions.DurableImageFolderName);
        _hosts.GetOrAdd(hostId, _ => new DurableImage(imageDirectory, keepHistory: true)).Baseline(volumesRoot);
    }

    /// <summary>The power goes out: nothing fsynced from now on counts.</summary>
    public void PowerOff(string hostId) => _hosts[hostId].PowerOff();

    /// <summary>The fsyncs recorded for files whose path contains <paramref name="suffix"/>, oldest first: for a failure message.</summary>
    public string History(string hostId, string suffix, int last = 16) => _hosts.TryGetValue(hostId, out var image) ? image.History(suffix, last) : "";

    /// <summary>Rolls every file back to what was durable; returns how many files lost something.</summary>
    public int RestoreAfterPowerLoss(string hostId, string volumesRoot) => _hosts[hostId].Restore(volumesRoot);
}
