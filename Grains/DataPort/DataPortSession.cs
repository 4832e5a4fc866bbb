using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using OrleansStorage.Auth;
using OrleansStorage.Errors;
using OrleansStorage.Storage;
using OrleansStorage.Telemetry;

namespace OrleansStorage.DataPort;

/// <summary>
/// One connection to the data port. One loop reads requests in order (a hello changes the
/// connection's principal before the next request is read); each other request runs on its own and
/// is answered when done, so replies leave in any order. The loop reads no further while
/// <see cref="DataPortLimits.MaxInFlight"/> requests or <see cref="BudgetBytes"/> of payload are
/// outstanding: a client that floods the port waits on its own connection. A malformed frame or a
/// failed TLS handshake closes this connection only.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "The semaphores hold no handle (AvailableWaitHandle is never used); requests still running after the connection closed release them.")]
internal sealed class DataPortSession(DataPortServer server, Socket socket)
{
    /// <summary>Payload bytes (write data read in, read data to send) one connection may hold at once.</summary>
    public const int BudgetBytes = 32 * 1024 * 1024;

    private const int BudgetUnit = 64 * 1024;
    private static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);

    private readonly string _peer = socket.RemoteEndPoint?.ToString() ?? "?";
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly SemaphoreSlim _slots = new(DataPortLimits.MaxInFlight, DataPortLimits.MaxInFlight);
    private readonly SemaphoreSlim _budget = new(BudgetBytes / BudgetUnit, BudgetBytes / BudgetUnit);
    private Stream _stream = Stream.Null;
    private Principal? _principal;
    private string? _ticketProblem = "no ticket was sent on this connection";

    public void Abort() => socket.Dispose();

    public async Task RunAsync(CancellationToken stopping)
    {
        Stream stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            if (server.Tls is { } tls)
            {
                var secured = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = secured;
                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping);
                deadline.CancelAfter(HandshakeTimeout);
                string? refusal = null;
                try
                {
                    await secured.AuthenticateAsServerAsync(tls.ServerOptions(r => refusal = r), deadline.Token);
                }
                catch (Exception ex) when (ex is AuthenticationException or IOException or OperationCanceledException && !stopping.IsCancellationRequested)
                {
                    server.Refused(_peer, $"TLS: {refusal ?? (ex is OperationCanceledException ? $"no handshake within {HandshakeTimeout.TotalSeconds:0} s" : ex.Message)}");
                    return;
                }
            }
            _stream = stream;
            await ReadRequestsAsync(stopping);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The peer went away, or the silo is stopping: nothing to answer.
        }
        finally
        {
            await stream.DisposeAsync();
        }
    }

    private async Task ReadRequestsAsync(CancellationToken stopping)
    {
        var header = new byte[DataRequestHeader.Size];
        while (true)
        {
            await _slots.WaitAsync(stopping);
            if (!await ReadFrameStartAsync(header, stopping))
            {
                // Closed between frames: a clean goodbye (perhaps only of the sending half), so the
                // requests still running are answered before the connection closes.
                for (var i = 1; i < DataPortLimits.MaxInFlight; i++)
                {
                    await _slots.WaitAsync(stopping);
                }
                return;
            }
            if (DataRequestHeader.TryRead(header, DataPortLimits.MaxPayload, out var problem) is not { } request)
            {
                server.Refused(_peer, problem!);
                return;
            }
            if (DataRequestHeader.TraceFollows(header))
            {
                var block = new byte[DataRequestHeader.TraceSize];
                await _stream.ReadExactlyAsync(block, stopping);
                request.Trace = DataRequestHeader.ReadTrace(block);
            }
            if (request.Op == DataOp.Hello)
            {
                var ticket = new byte[request.PayloadLength];
                await _stream.ReadExactlyAsync(ticket, stopping);
                TakeTicket(ticket);
                _slots.Release();
                continue;
            }
            var bytes = Math.Max(request.PayloadLength, request.Op is DataOp.Read or DataOp.SnapshotRead ? request.Length : 0);
            var units = Math.Max(1, (bytes + BudgetUnit - 1) / BudgetUnit);
            for (var i = 0; i < units; i++)
            {
                await _budget.WaitAsync(stopping);
            }
            byte[]? payload = null;
            if (request.PayloadLength > 0)
            {
                payload = ArrayPool<byte>.Shared.Rent(request.PayloadLength);
                try
                {
                    await _stream.ReadExactlyAsync(payload.AsMemory(0, request.PayloadLength), stopping);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(payload);
                    throw;
                }
            }
            _ = HandleAsync(request, payload, units);
        }
    }

    /// <summary>False at a clean end of stream before the first byte of a frame; a frame cut short is an error.</summary>
    private async Task<bool> ReadFrameStartAsync(byte[] header, CancellationToken stopping)
    {
        var first = await _stream.ReadAtLeastAsync(header, header.Length, throwOnEndOfStream: false, stopping);
        if (first == 0)
        {
            return false;
        }
        if (first < header.Length)
        {
            throw new EndOfStreamException($"a request header cut short after {first} bytes");
        }
        return true;
    }

    private void TakeTicket(byte[] ticket)
    {
        var access = server.Access;
        if (!access.IsOn)
        {
            return;
        }
        _principal = access.Tickets!.Open(ticket, access.Now, out var problem);
        _ticketProblem = _principal is null ? $"the ticket sent on this connection is not valid: {problem}" : null;
    }

    private async Task HandleAsync(DataRequestHeader request, byte[]? payload, int units)
    {
        byte[]? reply = null;
        var replyLength = 0;
        var started = Stopwatch.GetTimestamp();
        var status = DataStatus.Ok;
        using var span = StorageTelemetry.StartServe(request, server.HostId);
        try
        {
            var door = server.Door ?? throw server.Asleep();
            AccessControl.Caller = Admit(request.Op);
            DataRequestDeadline.Set(request.TimeoutMs);
            var segment = new SegmentAddress(request.VolumeId, request.SegmentIndex);
            switch (request.Op)
            {
                case DataOp.Read:
                case DataOp.SnapshotRead:
                    reply = ArrayPool<byte>.Shared.Rent(request.Length);
                    replyLength = request.Length;
                    var read = new SegmentRead(request.Epoch, segment, request.Offset, request.Length);
                    await (request.Op == DataOp.Read ? door.ReadAsync(read, reply.AsMemory(0, request.Length)) : door.ReadSnapshotAsync(read, reply.AsMemory(0, request.Length)));
                    break;
                case DataOp.Write:
                case DataOp.ReplicaWrite:
                    var write = new SegmentWrite(request.Epoch, segment, request.Offset, payload.AsMemory(0, request.PayloadLength), request.ForceUnitAccess, request.Version);
                    await (request.Op == DataOp.Write ? door.WriteAsync(write) : door.ReplicaWriteAsync(write));
                    break;
                case DataOp.Trim:
                case DataOp.ReplicaTrim:
                    var trim = new SegmentTrim(request.Epoch, segment, request.Offset, request.Length, request.Version);
                    await (request.Op == DataOp.Trim ? door.TrimAsync(trim) : door.ReplicaTrimAsync(trim));
                    break;
                case DataOp.Materialize:
                case DataOp.ReplicaMaterialize:
                    var image = new SegmentWrite(request.Epoch, segment, 0, payload.AsMemory(0, request.PayloadLength), false, request.Version);
                    await (request.Op == DataOp.Materialize ? door.MaterializeAsync(image) : door.ReplicaMaterializeAsync(image));
                    break;
                case DataOp.ReplicaPreserve:
                    await door.ReplicaPreserveAsync(new SegmentPreserve(request.Epoch, segment, request.Version));
                    break;
                case DataOp.Flush:
                    await door.FlushAsync(request.Epoch, request.VolumeId);
                    break;
                case DataOp.Allocation:
                case DataOp.SnapshotAllocation:
                    var range = new SegmentRead(request.Epoch, segment, request.Offset, request.Length);
                    var extents = await (request.Op == DataOp.Allocation ? door.GetAllocationAsync(range) : door.GetSnapshotAllocationAsync(range));
                    replyLength = extents.Length * 8;
                    reply = ArrayPool<byte>.Shared.Rent(Math.Max(1, replyLength));
                    for (var i = 0; i < extents.Length; i++)
                    {
                        BinaryPrimitives.WriteInt32LittleEndian(reply.AsSpan(i * 8), extents[i].Offset);
                        BinaryPrimitives.WriteInt32LittleEndian(reply.AsSpan((i * 8) + 4), extents[i].Length);
                    }
                    break;
                case DataOp.Map:
                    var (map, epoch) = await door.GetMapAsync();
                    if (map.Length > DataPortLimits.MaxPayload)
                    {
                        throw new InvalidRequestException($"the map at epoch {epoch} is {map.Length} bytes; a data-port reply carries at most {DataPortLimits.MaxPayload}");
                    }
                    await SendReplyAsync(new DataReplyHeader(request.Tag, DataStatus.Ok, epoch, map.Length), map);
                    return;
            }
            await SendReplyAsync(new DataReplyHeader(request.Tag, DataStatus.Ok, 0, replyLength), reply.AsMemory(0, replyLength));
        }
        catch (Exception error)
        {
            (status, var value) = DataErrors.Classify(error);
            span?.SetStatus(ActivityStatusCode.Error, status.ToString());
            var message = Encoding.UTF8.GetBytes(error.Message);
            await SendReplyAsync(new DataReplyHeader(request.Tag, status, value, message.Length), message);
        }
        finally
        {
            server.Metrics.Record(request.Op, request.VolumeId, request.Op is DataOp.Read or DataOp.SnapshotRead ? replyLength : request.PayloadLength, started, status);
            if (payload is not null)
            {
                ArrayPool<byte>.Shared.Return(payload);
            }
            if (reply is not null)
            {
                ArrayPool<byte>.Shared.Return(reply);
            }
            _budget.Release(units);
            _slots.Release();
        }
    }

    /// <summary>
    /// The principal the request runs as: the one the connection's ticket names, which must not
    /// have expired; a replica forward only from a host. Which volumes it may touch the storage
    /// server decides against its map, as for a grain call.
    /// </summary>
    private Principal? Admit(DataOp op)
    {
        var access = server.Access;
        if (!access.IsOn)
        {
            return null;
        }
        if (_principal is not { } principal)
        {
            throw access.Refuse(new AccessDeniedException($"{_ticketProblem}; every data request needs a ticket"));
        }
        if (principal.Expires <= access.Now)
        {
            throw access.Refuse(new AccessDeniedException($"the ticket of {principal.Describe()} expired at {principal.Expires:u}; send a fresh one"));
        }
        if (access.Revoked(principal) is { } revoked)
        {
            access.Refuse(new AccessDeniedException(revoked.Message)); // counted and logged as a refusal
            throw revoked;
        }
        if (op is DataOp.ReplicaWrite or DataOp.ReplicaTrim or DataOp.ReplicaPreserve or DataOp.ReplicaMaterialize && !principal.IsHost)
        {
            throw access.Refuse(principal.Denied($"send {op} (hosts only)"));
        }
        return principal;
    }

    private async Task SendReplyAsync(DataReplyHeader reply, ReadOnlyMemory<byte> payload)
    {
        // A small reply goes out as one write with its header (one TLS record, one segment).
        var coalesce = payload.Length < DataPortLimits.CoalesceBelow;
        var frame = ArrayPool<byte>.Shared.Rent(DataReplyHeader.Size + (coalesce ? payload.Length : 0));
        try
        {
            reply.Write(frame);
            if (coalesce)
            {
                payload.Span.CopyTo(frame.AsSpan(DataReplyHeader.Size));
            }
            await _writeLock.WaitAsync();
            try
            {
                await _stream.WriteAsync(frame.AsMemory(0, DataReplyHeader.Size + (coalesce ? payload.Length : 0)));
                if (!coalesce)
                {
                    await _stream.WriteAsync(payload);
                }
                await _stream.FlushAsync();
            }
            finally
            {
                _writeLock.Release();
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            // The connection is gone; its reader ends too, and the client fails the request.
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(frame);
        }
    }
}
