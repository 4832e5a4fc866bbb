using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Authentication;
using Microsoft.Extensions.Logging;
using OrleansStorage.Auth;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Telemetry;
using static OrleansStorage.Client.Nbd.NbdProtocol;

namespace OrleansStorage.Client.Nbd;

/// <summary>The client broke a MUST of the protocol: the connection is closed (a hard disconnect).</summary>
internal sealed class NbdProtocolException(string message) : Exception(message);

/// <summary>
/// One NBD client connection: the fixed newstyle handshake, then the transmission phase. Requests
/// are read one after another but served concurrently, and each reply is sent when its request
/// completes (out of order). Payload memory in flight is bounded per connection.
/// </summary>
internal sealed partial class NbdConnection : IAsyncDisposable
{
    private const int RequestHeaderSize = 28;
    private const int StructuredHeaderSize = 20;
    private const int SimpleHeaderSize = 16;

    // Cost of a request against the in-flight budget besides its payload, so that the number of
    // requests in flight is bounded too.
    private const int RequestOverhead = 4096;

    private static readonly byte[] Zeroes = new byte[1 << 20];

    private readonly Socket _socket;
    private Stream _stream;
    private readonly NbdExports _exports;
    private readonly NbdServerOptions _options;
    private readonly NbdServer _server;
    private readonly ILogger _logger;
    private readonly EndPoint? _remote;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly SemaphoreSlim _budgetFreed = new(0);
    private long _inFlightCost;

    private bool _structuredReplies;
    private bool _noZeroes;
    private string? _allocationContextExport;
    private VolumeHandle? _volume;
    private long _exportSize;

    // Set when transmission begins: one for a write's payload (the read loop), one for replies (the send lock).
    private NbdDeadline? _payloadDeadline;
    private NbdDeadline? _replyDeadline;

    /// <summary>Who the client is once TLS is up: the name in its certificate.</summary>
    private string? _tlsClient;

    /// <summary>What the TLS client may do (null: plain text, or a cluster that checks nothing).</summary>
    private ClientGrant? _grant;

    /// <summary>
    /// The bound export is read-only for this client: writes, trims and write-zeroes answer EPERM.
    /// Set from the grant watch's loop too, when the client's grant loses write (<see cref="FollowGrant"/>).
    /// </summary>
    private volatile bool _readOnly;

    /// <summary>The export was bound writable: a flush has this client's writes to make durable, even after its grant lost write.</summary>
    private bool _boundWritable;

    /// <summary>The client's grant no longer lets it read the volume: every request is refused while the connection closes.</summary>
    private volatile bool _revoked;

    private readonly NbdAdmission.Slot _slot;

    public NbdConnection(Socket socket, NbdAdmission.Slot slot, NbdExports exports, NbdServerOptions options, NbdServer server, ILogger logger)
    {
        _server = server;
        _slot = slot;
        _socket = socket;
        _socket.NoDelay = true;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _exports = exports;
        _options = options;
        _logger = logger;
        _remote = socket.RemoteEndPoint;
    }

    /// <summary>What the export offers: a read-only one (a snapshot, or a read-only grant) offers no trim and no write-zeroes.</summary>
    private static ushort TransmissionFlags(bool structured, bool readOnly) => (ushort)(FlagHasFlags | FlagSendFlush | FlagSendFua | FlagCanMultiConn
        | (structured ? FlagSendDf : 0) | (readOnly ? FlagReadOnly : FlagSendTrim | FlagSendWriteZeroes));

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        // Requests still waiting (for memory, for the send lock) when the connection breaks are
        // abandoned, so a dead client frees what it held at once; after a clean disconnect the
        // requests in flight still finish, as the protocol asks.
        using var requests = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var clean = false;
        try
        {
            bool chosen;
            using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                handshake.CancelAfter(_options.HandshakeTimeout);
                try
                {
                    chosen = await HandshakeAsync(handshake.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new NbdProtocolException($"no export chosen within {_options.HandshakeTimeout.TotalSeconds:0} s of connecting");
                }
            }
            if (chosen)
            {
                NbdLog.Connected(_logger, _remote, _tlsClient ?? "(plain text)", _volume!.Name, _exportSize, _structuredReplies);
                // A rollback is refused while this connection may write the volume.
                await using var writer = _readOnly ? null : _exports.HoldOpenForWriting(_volume.VolumeName, $"NBD client {_remote} ({_tlsClient ?? "plain text"}) of {Environment.MachineName}");
                using var grant = FollowGrant(requests);
                await TransmitAsync(requests.Token);
            }
            clean = true;
            NbdLog.Disconnected(_logger, _remote);
        }
        catch (NbdAdmission.RefusedException)
        {
            // counted and logged by the server
        }
        catch (NbdProtocolException ex)
        {
            _server.CountRejected();
            if (_server.Refusals.TryEnter(out var suppressed))
            {
                NbdLog.ProtocolViolation(_logger, _remote, ex.Message, suppressed);
            }
        }
        catch (AuthenticationException ex)
        {
            _server.CountRejected();
            if (_server.Refusals.TryEnter(out var suppressed))
            {
                NbdLog.TlsRefused(_logger, _remote, ex.Message, suppressed);
            }
        }
        catch (Exception ex) when (ex is EndOfStreamException or IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // A client can make this happen at will (connect, then reset): at the refusals' rate.
            if (_server.Refusals.TryEnter(out var suppressed))
            {
                NbdLog.ConnectionLost(_logger, _remote, ex.Message, suppressed);
            }
        }
        finally
        {
            if (!clean)
            {
                await requests.CancelAsync();
            }
            await WaitForInFlightAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _payloadDeadline?.Dispose();
        _replyDeadline?.Dispose();
        _sendLock.Dispose();
        _budgetFreed.Dispose();
    }

    // ---------------------------------------------------------------- transmission

    private readonly record struct Request(ushort Flags, ushort Type, ulong Handle, ulong Offset, uint Length);

    private async Task TransmitAsync(CancellationToken cancellationToken)
    {
        _payloadDeadline = new NbdDeadline(cancellationToken, _options.PayloadTimeout);
        _replyDeadline = new NbdDeadline(cancellationToken, _options.PayloadTimeout);
        var header = new byte[RequestHeaderSize];
        while (true)
        {
            await ReadRequestHeaderAsync(header, cancellationToken);
            if (BinaryPrimitives.ReadUInt32BigEndian(header) != RequestMagic)
            {
                throw new NbdProtocolException("bad request magic");
            }
            var request = new Request(
                BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4)),
                BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(6)),
                BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8)),
                BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(16)),
                BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(24)));

            if (request.Type == CmdDisconnect)
            {
                return; // the finally of RunAsync waits for the requests still in flight
            }

            byte[]? payload = null;
            long cost = RequestOverhead;
            if (request.Type == CmdWrite)
            {
                if (request.Length > _options.MaxRequestBytes)
                {
                    // Its payload follows and we will not buffer it: a hard disconnect is all we can do.
                    throw new NbdProtocolException($"write of {request.Length} bytes exceeds the maximum block size {_options.MaxRequestBytes}");
                }
                cost += request.Length;
                await AcquireBudgetAsync(cost, cancellationToken);
                payload = _server.Memory.Pool.Rent((int)request.Length);
                try
                {
                    await ReadPayloadAsync(payload.AsMemory(0, (int)request.Length), cancellationToken);
                }
                catch
                {
                    _server.Memory.Pool.Return(payload);
                    ReleaseBudget(cost);
                    throw;
                }
            }
            else
            {
                if (request.Type == CmdRead && request.Length <= _options.MaxRequestBytes)
                {
                    cost += request.Length;
                }
                await AcquireBudgetAsync(cost, cancellationToken);
            }
            _ = ServeAsync(request, payload, cost, cancellationToken);
        }
    }

    private async Task ServeAsync(Request request, byte[]? payload, long cost, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var volume = _volume!;
        var command = CommandLabel(request.Type);
        using var span = StorageTelemetry.StartRequest("nbd." + command, volume.Name, (long)request.Offset, request.Length);
        try
        {
            var (error, message) = await ExecuteAsync(volume, request, payload, cancellationToken);
            _server.Metrics.Record(volume.Name, command, request.Type is CmdRead or CmdWrite ? request.Length : 0, started, error, ErrorLabel(error));
            if (error != 0)
            {
                span?.SetStatus(ActivityStatusCode.Error, message);
                _server.CountRejected();
                if (_server.Refusals.TryEnter(out var suppressed))
                {
                    NbdLog.RequestFailed(_logger, _remote, CommandName(request.Type), request.Offset, request.Length, error, message, suppressed);
                }
                await SendErrorAsync(request, error, message, cancellationToken);
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The client went away while we were replying; the read loop sees it too.
        }
        finally
        {
            if (payload is not null)
            {
                _server.Memory.Pool.Return(payload);
            }
            ReleaseBudget(cost);
        }
    }

    /// <summary>Runs one command. Returns (0, "") after sending its success reply, else the error to send.</summary>
    private async Task<(uint Error, string Message)> ExecuteAsync(VolumeHandle volume, Request request, byte[]? payload, CancellationToken cancellationToken)
    {
        var (flags, offset, length) = (request.Flags, request.Offset, request.Length);
        var end = offset + length;
        var inBounds = end >= offset && end <= (ulong)_exportSize;
        if (_revoked)
        {
            return (Eperm, $"client '{_tlsClient}' may no longer read export '{volume.Name}'");
        }
        if (_readOnly && request.Type is CmdWrite or CmdTrim or CmdWriteZeroes)
        {
            return (Eperm, volume.IsReadOnly ? $"export '{volume.Name}' is a snapshot: read-only" : $"export '{volume.Name}' is read-only for client '{_tlsClient}'");
        }
        try
        {
            switch (request.Type)
            {
                case CmdRead:
                    if ((flags & ~(CmdFlagFua | CmdFlagDf)) != 0 || ((flags & CmdFlagDf) != 0 && !_structuredReplies))
                    {
                        return (Einval, $"unsupported read flags 0x{flags:x}");
                    }
                    if (length > _options.MaxRequestBytes)
                    {
                        return ((flags & CmdFlagDf) != 0 ? Eoverflow : Einval, $"read of {length} bytes exceeds the maximum block size {_options.MaxRequestBytes}");
                    }
                    if (!inBounds)
                    {
                        return (Einval, $"read [{offset}, {end}) is past the end of the export ({_exportSize} bytes)");
                    }
                    await ReadAsync(volume, request, cancellationToken);
                    return (0, "");

                case CmdWrite:
                    if ((flags & ~CmdFlagFua) != 0)
                    {
                        return (Einval, $"unsupported write flags 0x{flags:x}");
                    }
                    if (!inBounds)
                    {
                        return (Enospc, $"write [{offset}, {end}) is past the end of the export ({_exportSize} bytes)");
                    }
                    await volume.WriteAsync((long)offset, payload.AsMemory(0, (int)length), (flags & CmdFlagFua) != 0, cancellationToken);
                    break;

                case CmdFlush:
                    if ((flags & ~CmdFlagFua) != 0)
                    {
                        return (Einval, $"unsupported flush flags 0x{flags:x}");
                    }
                    if (_boundWritable) // else nothing of this client's to make durable
                    {
                        await volume.FlushAsync(cancellationToken);
                    }
                    break;

                case CmdTrim:
                    if ((flags & ~CmdFlagFua) != 0)
                    {
                        return (Einval, $"unsupported trim flags 0x{flags:x}");
                    }
                    if (!inBounds)
                    {
                        return (Einval, $"trim [{offset}, {end}) is past the end of the export ({_exportSize} bytes)");
                    }
                    await volume.TrimAsync((long)offset, length, cancellationToken);
                    if ((flags & CmdFlagFua) != 0)
                    {
                        await volume.FlushAsync(cancellationToken);
                    }
                    break;

                case CmdWriteZeroes:
                    if ((flags & ~(CmdFlagFua | CmdFlagNoHole)) != 0)
                    {
                        return (Einval, $"unsupported write-zeroes flags 0x{flags:x}");
                    }
                    if (!inBounds)
                    {
                        return (Enospc, $"write-zeroes [{offset}, {end}) is past the end of the export ({_exportSize} bytes)");
                    }
                    await WriteZeroesAsync(volume, (long)offset, length, (flags & CmdFlagNoHole) != 0, cancellationToken);
                    if ((flags & CmdFlagFua) != 0)
                    {
                        await volume.FlushAsync(cancellationToken);
                    }
                    break;

                case CmdBlockStatus:
                    if (!_structuredReplies || _allocationContextExport is null)
                    {
                        return (Einval, "block status needs structured replies and the base:allocation context");
                    }
                    if ((flags & ~CmdFlagReqOne) != 0)
                    {
                        return (Einval, $"unsupported block status flags 0x{flags:x}");
                    }
                    if (!inBounds || length == 0)
                    {
                        return (Einval, $"block status [{offset}, {end}) is empty or past the end of the export ({_exportSize} bytes)");
                    }
                    await BlockStatusAsync(volume, request, cancellationToken);
                    return (0, "");

                default:
                    return (Einval, $"unknown command {request.Type}");
            }
        }
        catch (InvalidRequestException ex)
        {
            return (request.Type is CmdWrite or CmdWriteZeroes ? Enospc : Einval, ex.Message);
        }
        catch (AccessDeniedException ex)
        {
            return (Eperm, ex.Message); // the server's own client may not do this
        }
        catch (Exception ex) when (ex is StorageException or OrleansException or TimeoutException)
        {
            return (Eio, ex.Message);
        }
        await SendSimpleReplyAsync(request.Handle, 0, cancellationToken);
        return (0, "");
    }

    private async Task ReadAsync(VolumeHandle volume, Request request, CancellationToken cancellationToken)
    {
        var length = (int)request.Length;
        // The data in a buffer of its own size (a pool buffer of header + data would be the next
        // power of two: twice the memory for every 1 MiB read); the header goes in the same send.
        var buffer = _server.Memory.Pool.Rent(length);
        try
        {
            var data = buffer.AsMemory(0, length);
            await volume.ReadAsync((long)request.Offset, data, cancellationToken);
            if (!_structuredReplies)
            {
                var simple = new byte[SimpleHeaderSize];
                WriteSimpleHeader(simple, request.Handle, 0);
                await SendAsync(simple, data, cancellationToken);
                return;
            }
            if (length == 0)
            {
                await SendStructuredAsync(request.Handle, ReplyTypeNone, [], cancellationToken);
                return;
            }
            if ((request.Flags & CmdFlagDf) == 0 && data.Span.IndexOfAnyExcept((byte)0) < 0)
            {
                // All zeros (never written, or trimmed): say so in 12 bytes instead of sending them.
                var hole = new byte[12];
                BinaryPrimitives.WriteUInt64BigEndian(hole, request.Offset);
                BinaryPrimitives.WriteUInt32BigEndian(hole.AsSpan(8), request.Length);
                await SendStructuredAsync(request.Handle, ReplyTypeOffsetHole, hole, cancellationToken);
                return;
            }
            var structured = new byte[StructuredHeaderSize + 8];
            WriteStructuredHeader(structured, request.Handle, ReplyTypeOffsetData, (uint)(8 + length));
            BinaryPrimitives.WriteUInt64BigEndian(structured.AsSpan(StructuredHeaderSize), request.Offset);
            await SendAsync(structured, data, cancellationToken);
        }
        finally
        {
            _server.Memory.Pool.Return(buffer);
        }
    }

    private static async Task WriteZeroesAsync(VolumeHandle volume, long offset, uint length, bool noHole, CancellationToken cancellationToken)
    {
        if (!noHole)
        {
            await volume.TrimAsync(offset, length, cancellationToken); // punched holes read as zeros
            return;
        }
        for (long done = 0; done < length; done += Zeroes.Length)
        {
            var count = (int)Math.Min(Zeroes.Length, length - done);
            await volume.WriteAsync(offset + done, Zeroes.AsMemory(0, count), cancellationToken: cancellationToken);
        }
    }

    /// <summary>base:allocation: written ranges are data (0), everything else hole and zero.</summary>
    private async Task BlockStatusAsync(VolumeHandle volume, Request request, CancellationToken cancellationToken)
    {
        // Answer at most 1 GiB per request (the protocol lets the server describe less than asked).
        var length = (int)Math.Min(request.Length, 1u << 30);
        var extents = await volume.GetAllocationAsync((long)request.Offset, length, cancellationToken);
        var descriptors = new List<(uint Length, uint Flags)>();
        var position = (long)request.Offset;
        var end = position + length;
        void Add(long size, uint flags)
        {
            if (size > 0)
            {
                descriptors.Add(((uint)size, flags));
            }
        }
        foreach (var (extentOffset, extentLength) in extents)
        {
            Add(extentOffset - position, StateHole | StateZero);
            Add(extentLength, 0);
            position = extentOffset + extentLength;
        }
        Add(end - position, StateHole | StateZero);
        if ((request.Flags & CmdFlagReqOne) != 0)
        {
            descriptors.RemoveRange(1, descriptors.Count - 1);
        }
        var payload = new byte[4 + 8 * descriptors.Count];
        BinaryPrimitives.WriteUInt32BigEndian(payload, BaseAllocationId);
        for (var i = 0; i < descriptors.Count; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + 8 * i), descriptors[i].Length);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + 8 * i), descriptors[i].Flags);
        }
        await SendStructuredAsync(request.Handle, ReplyTypeBlockStatus, payload, cancellationToken);
    }

}
