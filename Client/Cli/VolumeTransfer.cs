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
    /// File, block device or stream → volume at <paramref name="volumeOffset"/>, then a flush:
    /// <paramref name="length"/> bytes, or all the source holds. A source that ends before
    /// <paramref name="length"/>, or that holds more than fits, is an error (after what was
    /// copied is flushed), never a silent short copy. With <paramref name="forceUnitAccess"/>
    /// every chunk is durable on every replica when acknowledged. Returns the bytes written.
    /// </summary>
    public static async Task<long> PutAsync(VolumeHandle volume, TransferSource source, long volumeOffset, long? length, TransferProgress? progress, CancellationToken cancellationToken, bool forceUnitAccess = false)
    {
        if (volumeOffset < 0 || volumeOffset > volume.SizeBytes)
        {
            throw new InvalidRequestException($"offset {volumeOffset} is outside volume '{volume.Name}' of {volume.SizeBytes} bytes");
        }
        if (length < 0)
        {
            throw new InvalidRequestException($"--length {length} is negative");
        }
        if (length > source.Length)
        {
            throw new InvalidRequestException($"--length {length} asks for more than '{source.Path}' holds ({source.Length} bytes)");
        }
        var room = volume.SizeBytes - volumeOffset;
        var wanted = length ?? source.Length;
        if (wanted > room)
        {
            throw new InvalidRequestException(
                $"'{source.Path}' is {wanted} bytes; at offset {volumeOffset} it does not fit in volume '{volume.Name}' of {volume.SizeBytes} bytes");
        }
        var written = source.Length is null
            ? await PutStreamAsync(volume, source, volumeOffset, wanted ?? room, progress, forceUnitAccess, cancellationToken)
            : await PutAtOffsetsAsync(volume, source, volumeOffset, wanted!.Value, progress, forceUnitAccess, cancellationToken);
        await volume.FlushAsync(cancellationToken);
        if (length is { } asked && written < asked)
        {
            throw new IOException($"'{source.Path}' ended after {written} of the {asked} bytes asked for; those {written} bytes are in '{volume.Name}'");
        }
        if (length is null && source.Length is null && written == room && await HasMoreAsync(source, cancellationToken))
        {
            throw new InvalidRequestException($"'{source.Path}' holds more than the {room} bytes from offset {volumeOffset} to the end of volume '{volume.Name}'; those were written (give --length to copy part of a stream)");
        }
        return written;
    }

    /// <summary>A file or block device of known size: chunks read at their offsets, several at once.</summary>
    private static async Task<long> PutAtOffsetsAsync(VolumeHandle volume, TransferSource source, long volumeOffset, long length, TransferProgress? progress, bool forceUnitAccess, CancellationToken cancellationToken)
    {
        await ForEachChunkAsync(length, async (position, count) =>
        {
            var buffer = ArrayPool<byte>.Shared.Rent(count);
            try
            {
                var read = await ReadExactlyAsync(source.Handle, buffer.AsMemory(0, count), position, cancellationToken);
                if (read != count)
                {
                    throw new IOException($"'{source.Path}' shrank while it was being read");
                }
                await WriteChunkAsync(volume, volumeOffset + position, buffer.AsMemory(0, count), progress, forceUnitAccess, cancellationToken);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }, cancellationToken);
        return length;
    }

    /// <summary>A pipe or character device: read in order, at most <paramref name="limit"/> bytes, the writes several at once.</summary>
    private static async Task<long> PutStreamAsync(VolumeHandle volume, TransferSource source, long volumeOffset, long limit, TransferProgress? progress, bool forceUnitAccess, CancellationToken cancellationToken)
    {
        var stream = source.Stream;
        using var inFlight = new SemaphoreSlim(ChunksInFlight);
        var writes = new List<Task>();
        long position = 0;
        while (position < limit)
        {
            await inFlight.WaitAsync(cancellationToken);
            var count = (int)Math.Min(ChunkSize, limit - position);
            var buffer = ArrayPool<byte>.Shared.Rent(count);
            var read = await stream.ReadAtLeastAsync(buffer.AsMemory(0, count), count, throwOnEndOfStream: false, cancellationToken);
            if (read == 0)
            {
                ArrayPool<byte>.Shared.Return(buffer);
                inFlight.Release();
                break;
            }
            var at = volumeOffset + position;
            writes.Add(Task.Run(async () =>
            {
                try
                {
                    await WriteChunkAsync(volume, at, buffer.AsMemory(0, read), progress, forceUnitAccess, cancellationToken);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    inFlight.Release();
                }
            }, cancellationToken));
            position += read;
            if (read < count)
            {
                break;
            }
        }
        await Task.WhenAll(writes);
        return position;
    }

    private static async Task WriteChunkAsync(VolumeHandle volume, long offset, ReadOnlyMemory<byte> data, TransferProgress? progress, bool forceUnitAccess, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        await volume.WriteAsync(offset, data, forceUnitAccess, cancellationToken);
        progress?.Add(data.Length, Stopwatch.GetElapsedTime(started));
    }

    /// <summary>Whether a stream has at least one more byte (read and dropped: it is only asked once the volume is full).</summary>
    private static async Task<bool> HasMoreAsync(TransferSource source, CancellationToken cancellationToken)
    {
        var one = new byte[1];
        return await source.Stream.ReadAsync(one, cancellationToken) == 1;
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
        // Into a regular file through a temporary one beside it, renamed over it once complete: a
        // copy that fails (a full disk, a lost cluster, ^C) leaves no partial file, and an
        // existing one as it was. A device (a disk, /dev/stdout) is written in place.
        var fullPath = Path.GetFullPath(path);
        // (ResolveLinkTarget throws for a path that does not exist yet: a new file is the common case.)
        var resolved = File.Exists(fullPath) ? File.ResolveLinkTarget(fullPath, returnFinalTarget: true)?.FullName ?? fullPath : fullPath;
        var direct = resolved.StartsWith("/dev/", StringComparison.Ordinal);
        var target = direct ? path : Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.ostor-get-{Guid.NewGuid():N}");
        try
        {
            using (var file = File.OpenHandle(target, direct ? FileMode.Create : FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.Asynchronous))
            {
                await CopyOutAsync(volume, file, volumeOffset, total, progress, cancellationToken);
            }
            if (!direct)
            {
                File.Move(target, path, overwrite: true);
            }
        }
        catch when (!direct)
        {
            File.Delete(target);
            throw;
        }
        return total;
    }

    private static Task CopyOutAsync(VolumeHandle volume, SafeFileHandle file, long volumeOffset, long total, TransferProgress? progress, CancellationToken cancellationToken) =>
        ForEachChunkAsync(total, async (position, count) =>
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
