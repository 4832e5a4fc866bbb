using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using OrleansStorage.Client.Library;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// One 4 KiB block used as a register, as Jepsen checks one: a writer stores increasing versions
/// and records when each was acknowledged; readers record when each read started and what it
/// returned. Linearizable means no read returns a version older than one acknowledged before the
/// read started.
/// </summary>
public sealed class RegisterHistory(long offset)
{
    public const int Block = 4096;

    private readonly ConcurrentQueue<(long Version, long AcknowledgedAt)> _writes = new();
    private readonly ConcurrentQueue<(long StartedAt, long? Version, string? Error)> _reads = new();
    private long _nextVersion;
    private long _longestWriteTicks;
    private long _longestReadTicks;

    public int Writes => _writes.Count;

    public int Reads => _reads.Count(r => r.Version is not null);

    public int FailedReads => _reads.Count(r => r.Version is null);

    public long Now() => Stopwatch.GetTimestamp();

    /// <summary>The slowest acknowledged write: how long the block could not be written (a primary change, a lease to wait out).</summary>
    public TimeSpan LongestWrite => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _longestWriteTicks));

    /// <summary>The slowest successful read.</summary>
    public TimeSpan LongestRead => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _longestReadTicks));

    /// <summary>A writer (every 20 ms) and a reader (every 10 ms), each one request at a time, until <paramref name="stop"/>.</summary>
    public Task RunAsync(VolumeHandle writer, VolumeHandle reader, CancellationToken stop) =>
        Task.WhenAll(
            Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    await WriteNextAsync(writer);
                    await Task.Delay(20, CancellationToken.None);
                }
            }, CancellationToken.None),
            Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    await ReadAsync(reader);
                    await Task.Delay(10, CancellationToken.None);
                }
            }, CancellationToken.None));

    /// <summary>Writes the next version; records it only once acknowledged. False (and nothing recorded) when the write failed.</summary>
    public async Task<bool> WriteNextAsync(VolumeHandle volume)
    {
        var version = Interlocked.Increment(ref _nextVersion);
        var block = new byte[Block];
        for (var i = 0; i < Block; i += sizeof(long))
        {
            BinaryPrimitives.WriteInt64LittleEndian(block.AsSpan(i), version);
        }
        var started = Now();
        try
        {
            await volume.WriteAsync(offset, block);
        }
        catch (Exception)
        {
            return false;
        }
        var acknowledged = Now();
        _writes.Enqueue((version, acknowledged));
        Longest(ref _longestWriteTicks, acknowledged - started);
        return true;
    }

    public async Task ReadAsync(VolumeHandle volume)
    {
        var started = Now();
        var block = new byte[Block];
        try
        {
            await volume.ReadAsync(offset, block);
        }
        catch (Exception ex)
        {
            _reads.Enqueue((started, null, ex.Message));
            return;
        }
        var version = BinaryPrimitives.ReadInt64LittleEndian(block);
        for (var i = 0; i < Block; i += sizeof(long))
        {
            if (BinaryPrimitives.ReadInt64LittleEndian(block.AsSpan(i)) != version)
            {
                _reads.Enqueue((started, -1, $"a torn block: version {version} at 0, {BinaryPrimitives.ReadInt64LittleEndian(block.AsSpan(i))} at {i}"));
                return;
            }
        }
        _reads.Enqueue((started, version, null));
        Longest(ref _longestReadTicks, Now() - started);
    }

    private static void Longest(ref long longest, long ticks)
    {
        for (var seen = Interlocked.Read(ref longest); ticks > seen; seen = Interlocked.Read(ref longest))
        {
            if (Interlocked.CompareExchange(ref longest, ticks, seen) == seen)
            {
                return;
            }
        }
    }

    /// <summary>Every read that returned less than what was acknowledged before it started (or a torn block), as lines for a person.</summary>
    public List<string> Violations()
    {
        var writes = _writes.OrderBy(w => w.AcknowledgedAt).ToArray();
        var violations = new List<string>();
        foreach (var read in _reads.Where(r => r.Version is not null).OrderBy(r => r.StartedAt))
        {
            if (read.Version == -1)
            {
                violations.Add(read.Error!);
                continue;
            }
            var acknowledged = writes.Where(w => w.AcknowledgedAt < read.StartedAt).Select(w => w.Version).DefaultIfEmpty(0).Max();
            if (read.Version < acknowledged)
            {
                violations.Add($"a read started {Stopwatch.GetElapsedTime(read.StartedAt).TotalSeconds:0.000} s ago returned version {read.Version}, but version {acknowledged} was acknowledged before it started");
            }
        }
        return violations;
    }

    /// <summary>The distinct errors reads saw, with how often.</summary>
    public IEnumerable<string> ReadErrors() =>
        _reads.Where(r => r.Error is not null && r.Version is null).GroupBy(r => r.Error!).Select(g => $"{g.Count()} x {g.Key}");
}
