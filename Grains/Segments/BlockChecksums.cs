using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OrleansStorage.Segments;

/// <summary>
/// A crc32c of every 4 KiB block of a segment, in a file beside it (<c>{segment}.crc</c>): 4 bytes
/// per block, block n at byte 4n. What is stored is the block's crc32c XOR the crc32c of a block of
/// zeros, so a block of zeros stores 0: a hole in the segment and a hole (or the end) of its
/// checksum file agree without a write, and a trimmed block needs only zeros here. A missing or
/// truncated checksum file therefore reads as zeros, which no block holding data matches: it is
/// never taken for "all good" (docs/failures.md, "Silent corruption").
/// </summary>
internal static class BlockChecksums
{
    public const string Extension = ".crc";
    public const int BlockSize = 4096;
    private static readonly uint ZeroBlockCrc = Crc32C(new byte[BlockSize]);

    /// <summary>The block holding byte <paramref name="offset"/> of a segment.</summary>
    public static int BlockOf(long offset) => (int)(offset / BlockSize);

    /// <summary>The blocks [first, end) that bytes [offset, offset + length) touch.</summary>
    public static (int First, int End) BlocksOf(int offset, int length) =>
        (BlockOf(offset), length == 0 ? BlockOf(offset) : (int)(((long)offset + length + BlockSize - 1) / BlockSize));

    /// <summary>What is stored for one block: its crc32c XOR a zero block's (a short last block counts as zero-padded).</summary>
    public static uint Stored(ReadOnlySpan<byte> block)
    {
        if (block.Length == BlockSize)
        {
            return Crc32C(block) ^ ZeroBlockCrc;
        }
        Span<byte> padded = stackalloc byte[BlockSize];
        padded.Clear();
        block.CopyTo(padded);
        return Crc32C(padded) ^ ZeroBlockCrc;
    }

    /// <summary>
    /// The stored values of <paramref name="bytes"/>, block by block (it starts at a block
    /// boundary; blocks past its end are zeros). Four whole blocks at a time: each crc32c
    /// instruction waits for the one before it in its block, so four independent blocks
    /// interleaved keep the CPU's crc unit busy (measured about 3x the speed of one at a time).
    /// </summary>
    public static void Compute(ReadOnlySpan<byte> bytes, Span<uint> destination)
    {
        var whole = Math.Min(destination.Length, bytes.Length / BlockSize);
        var i = 0;
        for (; i + 4 <= whole; i += 4)
        {
            var (a, b, c, d) = Crc32C4(bytes.Slice(i * BlockSize, 4 * BlockSize));
            destination[i] = a ^ ZeroBlockCrc;
            destination[i + 1] = b ^ ZeroBlockCrc;
            destination[i + 2] = c ^ ZeroBlockCrc;
            destination[i + 3] = d ^ ZeroBlockCrc;
        }
        for (; i < destination.Length; i++)
        {
            var start = i * BlockSize;
            destination[i] = start >= bytes.Length ? 0 : Stored(bytes.Slice(start, Math.Min(BlockSize, bytes.Length - start)));
        }
    }

    /// <summary>Reads the stored values of blocks [first, first + destination.Length); a missing file or slot reads 0.</summary>
    public static void Read(SafeFileHandle? handle, int firstBlock, Span<uint> destination)
    {
        destination.Clear();
        if (handle is null)
        {
            return;
        }
        var bytes = MemoryMarshal.AsBytes(destination);
        long at = (long)firstBlock * sizeof(uint);
        var filled = 0;
        while (filled < bytes.Length)
        {
            var read = RandomAccess.Read(handle, bytes[filled..], at + filled);
            if (read == 0)
            {
                break; // past the end: never written, or truncated; reads 0
            }
            filled += read;
        }
        if (!BitConverter.IsLittleEndian)
        {
            BinaryPrimitives.ReverseEndianness(destination, destination);
        }
    }

    /// <summary>Stores the values of blocks [first, first + values.Length).</summary>
    public static void Write(SafeFileHandle handle, int firstBlock, ReadOnlySpan<uint> values)
    {
        if (!BitConverter.IsLittleEndian)
        {
            var swapped = values.ToArray();
            BinaryPrimitives.ReverseEndianness(swapped, swapped);
            values = swapped;
        }
        RandomAccess.Write(handle, MemoryMarshal.AsBytes(values), (long)firstBlock * sizeof(uint));
    }

    /// <summary>The blocks of <paramref name="bytes"/> (starting at block <paramref name="firstBlock"/>) whose stored values do not match.</summary>
    public static List<int> Mismatched(ReadOnlySpan<byte> bytes, int firstBlock, ReadOnlySpan<uint> stored)
    {
        var rented = stored.Length > 64 ? System.Buffers.ArrayPool<uint>.Shared.Rent(stored.Length) : null;
        Span<uint> actual = rented ?? stackalloc uint[64];
        actual = actual[..stored.Length];
        Compute(bytes, actual);
        List<int>? bad = null;
        for (var i = 0; i < stored.Length; i++)
        {
            if (actual[i] != stored[i])
            {
                (bad ??= []).Add(firstBlock + i);
            }
        }
        if (rented is not null)
        {
            System.Buffers.ArrayPool<uint>.Shared.Return(rented);
        }
        return bad ?? [];
    }

    /// <summary>The crc32c of four consecutive whole blocks, computed side by side.</summary>
    private static (uint, uint, uint, uint) Crc32C4(ReadOnlySpan<byte> fourBlocks)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(fourBlocks);
        const int Lane = BlockSize / sizeof(ulong);
        uint a = uint.MaxValue, b = uint.MaxValue, c = uint.MaxValue, d = uint.MaxValue;
        for (var i = 0; i < Lane; i++)
        {
            a = BitOperations.Crc32C(a, words[i]);
            b = BitOperations.Crc32C(b, words[Lane + i]);
            c = BitOperations.Crc32C(c, words[(2 * Lane) + i]);
            d = BitOperations.Crc32C(d, words[(3 * Lane) + i]);
        }
        return (~a, ~b, ~c, ~d);
    }

    /// <summary>crc32c with the CPU's instruction (SSE4.2 / ARMv8 CRC), 8 bytes at a time.</summary>
    private static uint Crc32C(ReadOnlySpan<byte> data)
    {
        var crc = uint.MaxValue;
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var word in words)
        {
            crc = BitOperations.Crc32C(crc, word);
        }
        foreach (var b in data[(words.Length * sizeof(ulong))..])
        {
            crc = BitOperations.Crc32C(crc, b);
        }
        return ~crc;
    }
}
