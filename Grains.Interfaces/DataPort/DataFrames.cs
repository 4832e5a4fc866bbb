using System.Diagnostics;
using System.Buffers.Binary;

namespace OrleansStorage.DataPort;

/// <summary>What a request asks of a storage server's data port (docs/data-protocol.md).</summary>
public enum DataOp : byte
{
    /// <summary>Carries the sender's ticket: sent first, and again whenever it was renewed. Never answered; a bad ticket makes the requests after it fail with <see cref="DataStatus.AccessDenied"/>.</summary>
    Hello = 1,
    Read = 2,
    Write = 3,
    Trim = 4,
    Flush = 5,
    Allocation = 6,
    /// <summary>A primary's forward of a write to another replica of the group (hosts only).</summary>
    ReplicaWrite = 7,
    ReplicaTrim = 8,

    /// <summary>A read of a snapshot: the VolumeId field carries the snapshot's id. Served by the primary of the segment's group.</summary>
    SnapshotRead = 9,

    /// <summary>The written extents of a snapshot's segment, as <see cref="Allocation"/> (VolumeId carries the snapshot's id).</summary>
    SnapshotAllocation = 10,

    /// <summary>A primary's order to copy a segment for the current snapshot before the write that follows; Version is the primary's version of it (hosts only).</summary>
    ReplicaPreserve = 11,

    /// <summary>
    /// A client gives a clone's segment its first contents, the parent snapshot's bytes (the whole
    /// segment as payload); nothing when the segment has its own already.
    /// </summary>
    Materialize = 12,

    /// <summary>A primary's forward of a <see cref="Materialize"/> with the segment's new version (hosts only).</summary>
    ReplicaMaterialize = 13,

    /// <summary>
    /// The cluster map this host saved (it adopted it only after management persisted it): the
    /// reply's Value is its epoch, the payload the map in the Orleans serializer's format. A
    /// client that a host refused as stale takes the map from that host when management answers
    /// with an older one (docs/epoch-protocol.md, "A client on an old map").
    /// </summary>
    Map = 14,
}

/// <summary>How a request ended; everything but <see cref="Ok"/> carries a message for a person.</summary>
public enum DataStatus : byte
{
    Ok = 0,
    /// <summary>The request's epoch is older than the server's; the reply's Value is the server's epoch.</summary>
    StaleEpoch = 1,
    /// <summary>This host is not the one to serve the request at its epoch (not the primary, not a replica).</summary>
    Misdirected = 2,
    /// <summary>The server cannot serve it right now (no lease yet, starting, a replica failed): retry on a fresh map.</summary>
    Unavailable = 3,
    VolumeNotFound = 4,
    InvalidRequest = 5,
    /// <summary>The disk failed the request.</summary>
    IoError = 6,
    /// <summary>No replica holds a good copy of the blocks.</summary>
    DataCorrupt = 7,
    AccessDenied = 8,
    /// <summary>The volume's QoS limits hold the request back; the reply's Value is the pause in milliseconds.</summary>
    Throttled = 9,

    /// <summary>A clone's segment that was never written: read it from the clone's parent snapshot, or materialize it before writing.</summary>
    ReadThrough = 10,

    /// <summary>The connection's ticket was issued before its client's grant changed: send a fresh one and the request again.</summary>
    TicketRevoked = 11,
}

/// <summary>
/// The fixed header in front of every request. Integers are little-endian. <see cref="PayloadLength"/>
/// bytes follow it: the data of a write, the ticket of a hello; nothing for the others.
/// </summary>
public record struct DataRequestHeader(
    DataOp Op,
    ulong Tag,
    long Epoch,
    Guid VolumeId,
    long SegmentIndex,
    int Offset,
    int Length,
    long Version,
    bool ForceUnitAccess,
    int PayloadLength,
    uint TimeoutMs = 0)
{
    public const uint Magic = 0x5044534F; // "OSDP"
    public const byte ProtocolVersion = 1;
    public const int Size = 72;
    /// <summary>A hello's ticket is a few hundred bytes; more is not a ticket.</summary>
    public const int MaxTicketBytes = 16 * 1024;

    /// <summary>
    /// The trace block that follows the header of a traced request, before its payload: the W3C
    /// trace context of the sender's span (trace id 16 bytes, span id 8, trace flags 1, 7 reserved zero).
    /// </summary>
    public const int TraceSize = 32;

    private const ushort FlagForceUnitAccess = 1;
    private const ushort FlagTraced = 2;

    /// <summary>The sender's span, carried in a trace block when it is being recorded; default: none.</summary>
    public ActivityContext Trace { get; set; }

    public readonly bool IsTraced => Trace.TraceId != default;

    /// <summary>The header's bytes on the wire: the fixed part, and the trace block when there is one.</summary>
    public readonly int FrameHeaderSize => Size + (IsTraced ? TraceSize : 0);

    public readonly void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        destination[4] = ProtocolVersion;
        destination[5] = (byte)Op;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], (ushort)((ForceUnitAccess ? FlagForceUnitAccess : 0) | (IsTraced ? FlagTraced : 0)));
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Tag);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], Epoch);
        VolumeId.TryWriteBytes(destination[24..40]);
        BinaryPrimitives.WriteInt64LittleEndian(destination[40..], SegmentIndex);
        BinaryPrimitives.WriteInt32LittleEndian(destination[48..], Offset);
        BinaryPrimitives.WriteInt32LittleEndian(destination[52..], Length);
        BinaryPrimitives.WriteInt32LittleEndian(destination[56..], PayloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[60..], TimeoutMs);
        BinaryPrimitives.WriteInt64LittleEndian(destination[64..], Version);
        if (IsTraced)
        {
            var block = destination.Slice(Size, TraceSize);
            block.Clear();
            Trace.TraceId.CopyTo(block[..16]);
            Trace.SpanId.CopyTo(block[16..24]);
            block[24] = (byte)Trace.TraceFlags;
        }
    }

    /// <summary>Whether a trace block follows this (already validated) header on the wire.</summary>
    public static bool TraceFollows(ReadOnlySpan<byte> header) => (BinaryPrimitives.ReadUInt16LittleEndian(header[6..]) & FlagTraced) != 0;

    /// <summary>The sender's span from a trace block; a block of zeros (no valid ids) gives none.</summary>
    public static ActivityContext ReadTrace(ReadOnlySpan<byte> block)
    {
        var traceId = ActivityTraceId.CreateFromBytes(block[..16]);
        var spanId = ActivitySpanId.CreateFromBytes(block[16..24]);
        return traceId == default || spanId == default ? default : new ActivityContext(traceId, spanId, (ActivityTraceFlags)(block[24] & 1), isRemote: true);
    }

    /// <summary>
    /// Reads a header; null with <paramref name="problem"/> when the bytes are not one (a bad magic,
    /// another protocol version, an unknown operation or flag, a negative field, a payload past the limit).
    /// </summary>
    public static DataRequestHeader? TryRead(ReadOnlySpan<byte> source, int maxPayload, out string? problem)
    {
        problem = null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic)
        {
            problem = "bad request magic";
            return null;
        }
        if (source[4] != ProtocolVersion)
        {
            problem = $"protocol version {source[4]}; this server speaks {ProtocolVersion}";
            return null;
        }
        var op = (DataOp)source[5];
        if (op is < DataOp.Hello or > DataOp.Map)
        {
            problem = $"unknown operation {source[5]}";
            return null;
        }
        var flags = BinaryPrimitives.ReadUInt16LittleEndian(source[6..]);
        if ((flags & ~(FlagForceUnitAccess | FlagTraced)) != 0)
        {
            problem = $"unknown flags 0x{flags:x}";
            return null;
        }
        var header = new DataRequestHeader(
            op,
            BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
            BinaryPrimitives.ReadInt64LittleEndian(source[16..]),
            new Guid(source[24..40]),
            BinaryPrimitives.ReadInt64LittleEndian(source[40..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[48..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[52..]),
            BinaryPrimitives.ReadInt64LittleEndian(source[64..]),
            (flags & FlagForceUnitAccess) != 0,
            BinaryPrimitives.ReadInt32LittleEndian(source[56..]),
            BinaryPrimitives.ReadUInt32LittleEndian(source[60..]));
        // A primary's order to a replica may carry the unknown version (-1): a preserve, that of a
        // suspect segment, which never matches a replica's; a forwarded write, to a replica that
        // lacks a write it missed, whose version must become unknown.
        if (header.SegmentIndex < 0 || header.Offset < 0 || header.Length < 0 || header.PayloadLength < 0
            || header.Version < (op is DataOp.ReplicaPreserve or DataOp.ReplicaWrite or DataOp.ReplicaTrim or DataOp.ReplicaMaterialize ? -1 : 0))
        {
            problem = "a negative segment, offset or length";
            return null;
        }
        var limit = op == DataOp.Hello ? MaxTicketBytes : maxPayload;
        if (header.PayloadLength > limit || (op is DataOp.Read or DataOp.SnapshotRead or DataOp.Write or DataOp.ReplicaWrite or DataOp.Materialize or DataOp.ReplicaMaterialize && header.Length > maxPayload))
        {
            problem = $"a request of {Math.Max(header.PayloadLength, header.Length)} bytes; the limit is {(op == DataOp.Hello ? limit : maxPayload)}";
            return null;
        }
        var carriesData = op is DataOp.Write or DataOp.ReplicaWrite or DataOp.Materialize or DataOp.ReplicaMaterialize or DataOp.Hello;
        if (!carriesData && header.PayloadLength != 0)
        {
            problem = $"{op} with a payload of {header.PayloadLength} bytes";
            return null;
        }
        if (op is DataOp.Write or DataOp.ReplicaWrite or DataOp.Materialize or DataOp.ReplicaMaterialize && header.PayloadLength != header.Length)
        {
            problem = $"a write of {header.Length} bytes with {header.PayloadLength} bytes of payload";
            return null;
        }
        return header;
    }
}

/// <summary>
/// The fixed header in front of every reply: the request's tag (replies come in any order), the
/// status, a value whose meaning the status gives, and the length of what follows (a read's data,
/// an allocation's extents as pairs of 32-bit offset and length, an error's UTF-8 message).
/// </summary>
public record struct DataReplyHeader(ulong Tag, DataStatus Status, long Value, int PayloadLength)
{
    public const uint Magic = 0x5244534F; // "OSDR"
    public const int Size = 32;

    public readonly void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        destination[4] = DataRequestHeader.ProtocolVersion;
        destination[5] = (byte)Status;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Tag);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], Value);
        BinaryPrimitives.WriteInt32LittleEndian(destination[24..], PayloadLength);
        BinaryPrimitives.WriteInt32LittleEndian(destination[28..], 0);
    }

    public static DataReplyHeader? TryRead(ReadOnlySpan<byte> source, int maxPayload, out string? problem)
    {
        problem = null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic || source[4] != DataRequestHeader.ProtocolVersion)
        {
            problem = "bad reply magic or protocol version";
            return null;
        }
        var header = new DataReplyHeader(
            BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
            (DataStatus)source[5],
            BinaryPrimitives.ReadInt64LittleEndian(source[16..]),
            BinaryPrimitives.ReadInt32LittleEndian(source[24..]));
        if (header.PayloadLength < 0 || header.PayloadLength > maxPayload)
        {
            problem = $"a reply of {header.PayloadLength} bytes; the limit is {maxPayload}";
            return null;
        }
        return header;
    }
}

/// <summary>The limits both ends hold to (docs/data-protocol.md).</summary>
public static class DataPortLimits
{
    /// <summary>The most data one read or write carries; the client splits larger requests.</summary>
    public const int MaxPayload = 4 * 1024 * 1024;

    /// <summary>Requests a server works on at once per connection; it reads no more until one is answered.</summary>
    public const int MaxInFlight = 64;

    /// <summary>Below this, either end copies a payload behind its header so the two go out in one write (one TLS record, one segment).</summary>
    public const int CoalesceBelow = 64 * 1024;
}
