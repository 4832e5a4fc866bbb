using System.Diagnostics;
using System.Buffers;
using Microsoft.Win32.SafeHandles;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Cli;

/// <summary>Copies between a local file and a volume in chunks, several in flight, with pooled buffers.</summary>
public static class VolumeTransfer
{
    public const int ChunkSize = 4 << 20;
    public const int ChunksInFlight = 8;

    /// <summary>
    /// File → volume at <paramref name="volumeOffset"/>, then a flush. With
    /// <paramref name="forceUnitAccess"/> every chunk is durable on every replica when acknowledged.
    /// Returns the bytes written.
    /// </summary>
    public static async Task<long> PutAsync(VolumeHandle volume, string path, long volumeOffset, TransferProgress? progress, CancellationToken cancellationToken, bool forceUnitAccess = false)
    {
        using var file = OpenForRead(path);
        var length = RandomAccess.GetLength(file);
        if (volumeOffset < 0 || volumeOffset > volume.SizeBytes || length > volume.SizeBytes - volumeOffset)
        {
            throw new InvalidRequestException(
                $"'{path}' is {length} bytes; at offset {volumeOffset} it does not fit in volume '{volume.Name}' of {volume.SizeBytes} bytes");
        }
        await ForEachChunkAsync(length, async (position, count) =>
        {
            var buffer = ArrayPool<byte>.Shared.Rent(count);
            try
            {
                var read = await ReadExactlyAsync(file, buffer.AsMemory(0, count), position, cancellationToken);
                if (read != count)
                {
                    throw new IOException($"'{path}' shrank while it was being read");
                }
                var started = Stopwatch.GetTimestamp();
                await volume.WriteAsync(volumeOffset + position, buffer.AsMemory(0, count), forceUnitAccess, cancellationToken);
                progress?.Add(count, Stopwatch.GetElapsedTime(started));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }, cancellationToken);
        await volume.FlushAsync(cancellationToken);
        return length;
    }

    /// <summary>Volume → file; <paramref name="length"/> null means to the end of the volume.</summary>
    public static async Task<long> GetAsync(VolumeHandle volume, string path, long volumeOffset, long? length, TransferProgress? progress, CancellationToken cancellationToken)
    {
        var size = volume.SizeBytes;
        if (volumeOffset < 0 || volumeOffset > size)
        {
            throw new InvalidRequestException($"offset {volumeOffset} is outside volume '{volume.Name}' of {size} bytes");
        }
        var total = length ?? size - volumeOffset;
        if (total < 0 || total > size - volumeOffset)
        {
            throw new InvalidRequestException($"length {total} at offset {volumeOffset} runs past the end of volume '{volume.Name}' ({size} bytes)");
        }
        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.None, FileOptions.Asynchronous);
        await ForEachChunkAsync(total, async (position, count) =>
        {
            var buffer = ArrayPool<byte>.Shared.Rent(count);
            try
            {
                var started = Stopwatch.GetTimestamp();
                await volume.ReadAsync(volumeOffset + position, buffer.AsMemory(0, count), cancellationToken);
                var latency = Stopwatch.GetElapsedTime(started);
                await RandomAccess.WriteAsync(file, buffer.AsMemory(0, count), position, cancellationToken);
                progress?.Add(count, latency);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }, cancellationToken);
        return total;
    }

    private static SafeFileHandle OpenForRead(string path)
    {
        if (!File.Exists(path))
        {
            throw new InvalidRequestException($"no such file: '{path}'");
        }
        return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous);
    }

    private static Task ForEachChunkAsync(long total, Func<long, int, Task> body, CancellationToken cancellationToken)
    {
        var chunks = (total + ChunkSize - 1) / ChunkSize;
        var options = new ParallelOptions { MaxDegreeOfParallelism = ChunksInFlight, CancellationToken = cancellationToken };
        return Parallel.ForAsync(0, chunks, options, async (index, _) =>
        {
            var position = index * ChunkSize;
            await body(position, (int)Math.Min(ChunkSize, total - position));
        });
    }

    private static async Task<int> ReadExactlyAsync(SafeFileHandle file, Memory<byte> buffer, long position, CancellationToken cancellationToken)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var read = await RandomAccess.ReadAsync(file, buffer[total..], position + total, cancellationToken);
            if (read == 0)
            {
                break;
            }
            total += read;
        }
        return total;
    }
}
