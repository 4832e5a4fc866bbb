using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using OrleansStorage.Errors;

namespace OrleansStorage.DataPort;

/// <summary>
/// One connection to a host's data port, shared by many requests at once: each is sent whole
/// under a write lock and tagged, and one reader matches the replies, in whatever order they come,
/// to their requests. A read's data goes straight from the socket into the caller's buffer. When
/// the connection fails every request on it fails at once with <see cref="HostUnavailableException"/>
/// (the caller retries on a fresh map) and the link is never used again.
/// </summary>
public sealed class DataPortLink : IAsyncDisposable
{
    private readonly string _hostId;
    private readonly Stream _stream;
    private readonly Func<byte[]?>? _ticket;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<ulong, PendingRequest> _pending = new();
    private readonly Task _reading;
    private byte[]? _ticketSent;
    private long _nextTag;
    private Exception? _failure;

    private DataPortLink(string hostId, Stream stream, Func<byte[]?>? ticket)
    {
        _hostId = hostId;
        _stream = stream;
        _ticket = ticket;
        _reading = Task.Run(ReadRepliesAsync);
    }

    /// <summary>False once the connection failed or was closed: take a new one.</summary>
    public bool IsOpen => Volatile.Read(ref _failure) is null;

    public int InFlight => _pending.Count;

    /// <summary>Connects and (with <paramref name="security"/>) completes mutual TLS; any failure is <see cref="HostUnavailableException"/>.</summary>
    public static async Task<DataPortLink> ConnectAsync(string hostId, string endpoint, DataPortSecurity? security, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (!IPEndPoint.TryParse(endpoint, out var address) || address.Port == 0)
        {
            throw new HostUnavailableException(hostId, $"its data port '{endpoint}' is not an address:port (the host has not registered one)");
        }
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        Stream? stream = null;
        try
        {
            await socket.ConnectAsync(address, deadline.Token);
            stream = new NetworkStream(socket, ownsSocket: true);
            if (security is not null)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = tls;
                await tls.AuthenticateAsClientAsync(security.ClientOptions(), deadline.Token);
            }
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or System.Security.Authentication.AuthenticationException)
        {
            if (stream is null)
            {
                socket.Dispose();
            }
            else
            {
                await stream.DisposeAsync();
            }
            cancellationToken.ThrowIfCancellationRequested();
            var why = ex is OperationCanceledException ? $"no connection within {timeout.TotalSeconds:0} s" : ex.Message;
            throw new HostUnavailableException(hostId, $"cannot reach its data port {endpoint}: {why}");
        }
        return new DataPortLink(hostId, stream!, security?.Ticket);
    }

    /// <summary>
    /// Sends one request (its tag is set here) with <paramref name="payload"/> and waits for the
    /// reply. An Ok read's data lands in <paramref name="readInto"/>, which must stay valid until
    /// this returns; any other payload of an Ok reply is returned. An error reply is thrown as the
    /// exception the grain interface would have thrown.
    /// </summary>
    public async Task<byte[]?> SendAsync(DataRequestHeader request, ReadOnlyMemory<byte> payload, Memory<byte> readInto)
    {
        request.Tag = (ulong)Interlocked.Increment(ref _nextTag);
        request.PayloadLength = payload.Length;
        var pending = new PendingRequest(readInto);
        _pending[request.Tag] = pending;
        if (Volatile.Read(ref _failure) is { } failed)
        {
            _pending.TryRemove(request.Tag, out _);
            throw Lost(failed);
        }
        try
        {
            await WriteRequestAsync(request, payload);
        }
        catch (Exception ex)
        {
            // Whatever broke the send (the socket, TLS, a link disposed meanwhile) ends the link:
            // the reader then fails every request on it, this one too, so none waits forever.
            Fail(ex);
        }
        var reply = await pending.Completion.Task;
        if (reply.Status == DataStatus.Ok)
        {
            return reply.Payload;
        }
        var message = reply.Payload is null ? reply.Status.ToString() : Encoding.UTF8.GetString(reply.Payload);
        throw DataErrors.ToException(reply.Status, reply.Value, message, request.Epoch, _hostId);
    }

    /// <summary>Closes the connection when a request waited longer than <paramref name="limit"/>: a hung host must not hold its callers forever.</summary>
    public void CloseIfStuck(TimeSpan limit)
    {
        var now = Stopwatch.GetTimestamp();
        foreach (var pending in _pending.Values)
        {
            if (Stopwatch.GetElapsedTime(pending.Started, now) > limit)
            {
                Fail(new TimeoutException($"host '{_hostId}' did not answer a data request within {limit.TotalSeconds:0} s"));
                return;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new ObjectDisposedException(nameof(DataPortLink)));
        await _reading.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _writeLock.Dispose();
    }

    private async Task WriteRequestAsync(DataRequestHeader request, ReadOnlyMemory<byte> payload)
    {
        var coalesce = payload.Length < DataPortLimits.CoalesceBelow;
        var headerLength = request.FrameHeaderSize;
        var frameLength = headerLength + (coalesce ? payload.Length : 0);
        var frame = ArrayPool<byte>.Shared.Rent(frameLength);
        await _writeLock.WaitAsync();
        try
        {
            if (_ticket?.Invoke() is { } ticket && !ReferenceEquals(ticket, _ticketSent))
            {
                // Before the request that needs it, on the same stream: the server reads in order.
                // Rare (once per renewal), so it gets a buffer of its own.
                var hello = new byte[DataRequestHeader.Size + ticket.Length];
                new DataRequestHeader(DataOp.Hello, 0, 0, Guid.Empty, 0, 0, 0, 0, false, ticket.Length).Write(hello);
                ticket.CopyTo(hello.AsSpan(DataRequestHeader.Size));
                await _stream.WriteAsync(hello);
                _ticketSent = ticket;
            }
            request.Write(frame);
            if (coalesce)
            {
                payload.Span.CopyTo(frame.AsSpan(headerLength));
                await _stream.WriteAsync(frame.AsMemory(0, frameLength));
            }
            else
            {
                await _stream.WriteAsync(frame.AsMemory(0, headerLength));
                await _stream.WriteAsync(payload);
            }
            await _stream.FlushAsync();
        }
        finally
        {
            _writeLock.Release();
            ArrayPool<byte>.Shared.Return(frame);
        }
    }

    private async Task ReadRepliesAsync()
    {
        var header = new byte[DataReplyHeader.Size];
        PendingRequest? current = null;
        try
        {
            while (true)
            {
                await _stream.ReadExactlyAsync(header);
                var reply = DataReplyHeader.TryRead(header, DataPortLimits.MaxPayload, out var problem)
                    ?? throw new IOException($"host '{_hostId}' sent a malformed reply: {problem}");
                if (!_pending.TryRemove(reply.Tag, out current))
                {
                    throw new IOException($"host '{_hostId}' answered tag {reply.Tag}, which no request carries");
                }
                byte[]? payload = null;
                if (reply.Status == DataStatus.Ok && current.ReadInto.Length > 0)
                {
                    if (reply.PayloadLength != current.ReadInto.Length)
                    {
                        throw new IOException($"host '{_hostId}' returned {reply.PayloadLength} bytes for a read of {current.ReadInto.Length}");
                    }
                    await _stream.ReadExactlyAsync(current.ReadInto);
                }
                else if (reply.PayloadLength > 0)
                {
                    payload = new byte[reply.PayloadLength];
                    await _stream.ReadExactlyAsync(payload);
                }
                current.Completion.TrySetResult(new Reply(reply.Status, reply.Value, payload));
                current = null;
            }
        }
        catch (Exception ex)
        {
            Fail(ex);
            current?.Completion.TrySetException(Lost(ex));
            // Every request still waiting fails; any sent from now on fails as it is added.
            foreach (var tag in _pending.Keys)
            {
                if (_pending.TryRemove(tag, out var pending))
                {
                    pending.Completion.TrySetException(Lost(Volatile.Read(ref _failure)!));
                }
            }
        }
    }

    private void Fail(Exception reason)
    {
        if (Interlocked.CompareExchange(ref _failure, reason, null) is null)
        {
            _stream.Dispose();
        }
    }

    private HostUnavailableException Lost(Exception reason) =>
        new(_hostId, $"its data connection failed ({reason.Message}); the request may or may not have been applied");

    private readonly record struct Reply(DataStatus Status, long Value, byte[]? Payload);

    private sealed class PendingRequest(Memory<byte> readInto)
    {
        public Memory<byte> ReadInto { get; } = readInto;

        public long Started { get; } = Stopwatch.GetTimestamp();

        public TaskCompletionSource<Reply> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
