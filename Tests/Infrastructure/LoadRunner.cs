using System.Collections.Concurrent;
using System.Diagnostics;
using OrleansStorage.Client.Library;
using OrleansStorage.Management;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// The writer and the checker of the failure tests. Workers write random blocks, each to its own
/// stripe of a volume (so the order of acknowledged writes is known), and every acknowledged
/// write is copied into a shadow of the volume. At the end the checker reads every volume back
/// through the client and every replica straight from its host, and compares both with the shadow.
/// </summary>
public sealed class LoadRunner
{
    private const int Block = 4096;
    private readonly List<Target> _targets = [];
    private readonly List<Task> _workers = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly ConcurrentQueue<WriteRecord> _writes = new();
    private long _acknowledged;
    private long _maxLatencyTicks;

    /// <summary>
    /// One volume, written through each of the given handles (e.g. one from a client that never
    /// follows map pushes), each in its own stripe of the first <paramref name="writeLength"/>
    /// bytes (0: all of it). <paramref name="initial"/> is what the volume already holds.
    /// </summary>
    public void Add(VolumeHandle verifier, VolumeHandle[] writers, long writeLength = 0, byte[]? initial = null) =>
        _targets.Add(new Target(verifier, writers, initial ?? new byte[verifier.SizeBytes], writeLength > 0 ? writeLength : verifier.SizeBytes));

    public long Acknowledged => Interlocked.Read(ref _acknowledged);

    public TimeSpan MaxLatency => TimeSpan.FromTicks(Interlocked.Read(ref _maxLatencyTicks));

    public IReadOnlyCollection<string> Failures => _failures;

    /// <summary>Writes started at or after <paramref name="since"/> (acknowledged or not), as (volume, segment) pairs.</summary>
    public HashSet<(Guid Volume, long Segment)> SegmentsWrittenSince(long since, int segmentSize) =>
        [.. _writes.Where(w => w.Started >= since)
            .SelectMany(w => Enumerable.Range(0, (int)((w.Offset + w.Length - 1) / segmentSize - w.Offset / segmentSize + 1))
                .Select(i => (w.Volume, w.Offset / segmentSize + i)))];

    public static long Clock => Stopwatch.GetTimestamp();

    public void Start(int seed = 1)
    {
        var stripe = 0;
        foreach (var target in _targets)
        {
            var stripes = target.Writers.Length;
            var stripeBytes = target.WriteLength / stripes / Block * Block;
            for (var i = 0; i < stripes; i++)
            {
                var writer = target.Writers[i];
                var start = (long)i * stripeBytes;
                var random = new Random(seed * 1000 + stripe++);
                _workers.Add(Task.Run(() => WorkAsync(target, writer, start, stripeBytes, random)));
            }
        }
    }

    /// <summary>Lets the load run until <paramref name="writes"/> more writes were acknowledged (or fails the test after a minute).</summary>
    public async Task WaitForProgressAsync(long writes = 20)
    {
        var goal = Acknowledged + writes;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (Acknowledged < goal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the load made no progress: {Acknowledged} of {goal} writes acknowledged; failures: {string.Join(" | ", _failures)}");
            await Task.Delay(50);
        }
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_workers);
    }

    /// <summary>Every acknowledged write reads back through the client, and every replica of every segment holds exactly the shadow.</summary>
    public async Task VerifyAsync(IGrainFactory grains)
    {
        Assert.True(_failures.IsEmpty, $"{_failures.Count} writes failed: {string.Join(" | ", _failures.Take(5))}");
        var map = await grains.GetGrain<IManagementServiceGrain>(IManagementServiceGrain.DefaultKey).GetMapAsync();
        foreach (var target in _targets)
        {
            var back = new byte[target.Shadow.Length];
            await target.Verifier.ReadAsync(0, back);
            Assert.True(target.Shadow.AsSpan().SequenceEqual(back), $"volume '{target.Verifier.Name}' reads back differently from what was acknowledged");

            var volume = map.FindVolume(target.Verifier.VolumeId)!;
            var segmentSize = volume.SegmentSizeBytes;
            for (long segment = 0; segment < volume.SegmentCount; segment++)
            {
                var group = volume.PlacementGroupOf(segment);
                Assert.Equal(volume.ReplicationFactor, group.Replicas.Length);
                Assert.Empty(group.Pending);
                var expected = target.Shadow.AsMemory((int)(segment * segmentSize), segmentSize);
                foreach (var host in group.Replicas)
                {
                    var held = (await grains.GetGrain<IStorageServerGrain>(host).ReadLocalAsync(new SegmentAddress(volume.VolumeId, segment), 0, segmentSize)).Bytes;
                    Assert.True(expected.Span.SequenceEqual(held.Span), $"volume '{volume.Name}' segment {segment}: the replica on {host} differs from what was acknowledged");
                }
            }
        }
    }

    private async Task WorkAsync(Target target, VolumeHandle writer, long start, long length, Random random)
    {
        while (!_stop.IsCancellationRequested)
        {
            var blocks = random.Next(1, 17);
            var offset = start + random.NextInt64(0, length / Block - blocks + 1) * Block;
            var data = new byte[blocks * Block];
            random.NextBytes(data);
            var started = Clock;
            _writes.Enqueue(new WriteRecord(writer.VolumeId, offset, data.Length, started));
            try
            {
                await writer.WriteAsync(offset, data);
            }
            catch (Exception ex)
            {
                _failures.Enqueue($"write of {data.Length} bytes at {offset} of '{writer.Name}': {ex.Message}");
                return;
            }
            var latency = Stopwatch.GetElapsedTime(started).Ticks;
            long seen;
            while (latency > (seen = Interlocked.Read(ref _maxLatencyTicks)) && Interlocked.CompareExchange(ref _maxLatencyTicks, latency, seen) != seen)
            {
            }
            data.CopyTo(target.Shadow.AsSpan((int)offset));
            Interlocked.Increment(ref _acknowledged);
            await Task.Delay(2);
        }
    }

    private sealed record Target(VolumeHandle Verifier, VolumeHandle[] Writers, byte[] Shadow, long WriteLength);

    private sealed record WriteRecord(Guid Volume, long Offset, int Length, long Started);
}
