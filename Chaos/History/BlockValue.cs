using System.Buffers.Binary;
using System.Text;

namespace OrleansStorage.Chaos.History;

/// <summary>Which write produced a value: unique per run, as the register check needs (one value, one write).</summary>
public readonly record struct WriteId(int Client, long Sequence)
{
    public override string ToString() => $"c{Client}#{Sequence}";
}

public enum ReadKind
{
    /// <summary>All zeros: the block as it was before any write.</summary>
    Zeros,

    /// <summary>A whole, intact value of one write to this block.</summary>
    Value,

    /// <summary>Anything else: a torn or corrupt block, another block's value, foreign bytes.</summary>
    Garbled,
}

/// <summary>What a read returned, decoded.</summary>
public readonly record struct BlockRead(ReadKind Kind, WriteId Id, string Detail = "")
{
    public static BlockRead Zeros => new(ReadKind.Zeros, default);

    public override string ToString() => Kind switch
    {
        ReadKind.Zeros => "zeros",
        ReadKind.Value => Id.ToString(),
        _ => "garbled (" + Detail + ")",
    };
}

/// <summary>
/// The self-describing 4 KiB values the workload writes: a header naming the run, the writing
/// client, its sequence number and the block, then bytes generated from all of these. A read
/// regenerates the whole block from its header and compares every byte, which catches a torn
/// block (half of one write, half of another), a value written to the wrong block, and any
/// flipped bit; a checksum would only say that something differs.
/// </summary>
public static class BlockValue
{
    public const int Size = 4096;

    private const int HeaderSize = 32;
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("ostchaos");

    public static byte[] Encode(int runTag, WriteId id, int block)
    {
        var bytes = new byte[Size];
        Magic.CopyTo(bytes, 0);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), runTag);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), id.Client);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(16), id.Sequence);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(24), block);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(28), ~block);
        FillPattern(bytes.AsSpan(HeaderSize), runTag, id, block);
        return bytes;
    }

    /// <summary>Decodes what a read of <paramref name="block"/> returned.</summary>
    public static BlockRead Decode(ReadOnlySpan<byte> bytes, int runTag, int block)
    {
        if (bytes.Length != Size)
        {
            return new(ReadKind.Garbled, default, $"{bytes.Length} bytes instead of {Size}");
        }
        if (!bytes.ContainsAnyExcept((byte)0))
        {
            return BlockRead.Zeros;
        }
        if (!bytes[..Magic.Length].SequenceEqual(Magic))
        {
            var firstNonZero = bytes.IndexOfAnyExcept((byte)0);
            return new(ReadKind.Garbled, default, $"no header; first non-zero byte at {firstNonZero}: 0x{bytes[firstNonZero]:x2}");
        }
        var tag = BinaryPrimitives.ReadInt32LittleEndian(bytes[8..]);
        var id = new WriteId(BinaryPrimitives.ReadInt32LittleEndian(bytes[12..]), BinaryPrimitives.ReadInt64LittleEndian(bytes[16..]));
        var writtenFor = BinaryPrimitives.ReadInt32LittleEndian(bytes[24..]);
        if (tag != runTag)
        {
            return new(ReadKind.Garbled, id, $"a value of another run (tag {tag}, this run {runTag})");
        }
        if (writtenFor != block || BinaryPrimitives.ReadInt32LittleEndian(bytes[28..]) != ~writtenFor)
        {
            return new(ReadKind.Garbled, id, $"{id}'s value for block {writtenFor}, read at block {block}");
        }
        Span<byte> expected = stackalloc byte[Size - HeaderSize];
        FillPattern(expected, runTag, id, block);
        var differs = bytes[HeaderSize..].CommonPrefixLength(expected);
        if (differs < expected.Length)
        {
            var last = expected.Length - 1;
            while (bytes[HeaderSize + last] == expected[last])
            {
                last--;
            }
            return new(ReadKind.Garbled, id, $"header of {id}, bytes {HeaderSize + differs}..{HeaderSize + last} differ from its value");
        }
        return new(ReadKind.Value, id);
    }

    // xorshift64 from the value's identity: every value is different all through its 4 KiB.
    private static void FillPattern(Span<byte> into, int runTag, WriteId id, int block)
    {
        var state = unchecked((ulong)runTag * 0x9E3779B97F4A7C15UL ^ (ulong)id.Client << 48 ^ (ulong)id.Sequence << 8 ^ (ulong)block * 0xBF58476D1CE4E5B9UL) | 1;
        for (var i = 0; i + 8 <= into.Length; i += 8)
        {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            BinaryPrimitives.WriteUInt64LittleEndian(into[i..], state);
        }
    }
}
