using System.Buffers.Binary;
using System.Text;
using static OrleansStorage.Client.Nbd.NbdProtocol;

namespace OrleansStorage.Client.Nbd;

/// <summary>Replies out and request bytes in, each under its deadline: the send lock keeps replies whole.</summary>
internal sealed partial class NbdConnection
{
    private async Task SendErrorAsync(Request request, uint error, string message, CancellationToken cancellationToken)
    {
        if (!_structuredReplies)
        {
            await SendSimpleReplyAsync(request.Handle, error, cancellationToken);
            return;
        }
        var text = Encoding.UTF8.GetBytes(message.Length > 1000 ? message[..1000] : message);
        var payload = new byte[6 + text.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, error);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), (ushort)text.Length);
        text.CopyTo(payload, 6);
        await SendStructuredAsync(request.Handle, ReplyTypeError, payload, cancellationToken);
    }

    private Task SendSimpleReplyAsync(ulong handle, uint error, CancellationToken cancellationToken)
    {
        var reply = new byte[SimpleHeaderSize];
        WriteSimpleHeader(reply, handle, error);
        return SendAsync(reply, cancellationToken);
    }

    private Task SendStructuredAsync(ulong handle, ushort type, byte[] payload, CancellationToken cancellationToken)
    {
        var reply = new byte[StructuredHeaderSize + payload.Length];
        WriteStructuredHeader(reply, handle, type, (uint)payload.Length);
        payload.CopyTo(reply, StructuredHeaderSize);
        return SendAsync(reply, cancellationToken);
    }

    private static void WriteSimpleHeader(Span<byte> buffer, ulong handle, uint error)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], error);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], handle);
    }

    /// <summary>Every structured reply we send is a single chunk, so it is also the last (DONE).</summary>
    private static void WriteStructuredHeader(Span<byte> buffer, ulong handle, ushort type, uint payloadLength)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[4..], ReplyFlagDone);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[16..], payloadLength);
    }

    private Task SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken) =>
        SendAsync(message, ReadOnlyMemory<byte>.Empty, cancellationToken);

    /// <summary>
    /// One reply, header and data back to back under the send lock. A client that does not take
    /// it within the payload timeout (it stopped reading) is disconnected, which frees its memory.
    /// </summary>
    private async Task SendAsync(ReadOnlyMemory<byte> header, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await _sendLock.WaitAsync(cancellationToken);
        var deadline = _replyDeadline!;
        try
        {
            var token = deadline.Start();
            await _stream.WriteAsync(header, token);
            if (!data.IsEmpty)
            {
                await _stream.WriteAsync(data, token);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            _socket.Close(0); // ends the read loop too
            throw new IOException($"the client did not take a reply within {_options.PayloadTimeout.TotalSeconds:0} s");
        }
        finally
        {
            deadline.Stop();
            _sendLock.Release();
        }
    }

    /// <summary>The next request's header: waits for as long as the client likes, unless an idle timeout is set.</summary>
    private async Task ReadRequestHeaderAsync(byte[] header, CancellationToken cancellationToken)
    {
        if (_options.IdleTimeout is not { } idle)
        {
            await _stream.ReadExactlyAsync(header, cancellationToken);
            return;
        }
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(idle);
        try
        {
            await _stream.ReadExactlyAsync(header, deadline.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new NbdProtocolException($"no request for {idle.TotalSeconds:0} s (idle timeout)");
        }
    }

    /// <summary>A write's payload, which must arrive within the payload timeout of its header (a stalled client is disconnected).</summary>
    private async Task ReadPayloadAsync(Memory<byte> payload, CancellationToken cancellationToken)
    {
        var deadline = _payloadDeadline!;
        try
        {
            await _stream.ReadExactlyAsync(payload, deadline.Start());
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new NbdProtocolException($"a write's {payload.Length} bytes did not arrive within {_options.PayloadTimeout.TotalSeconds:0} s");
        }
        finally
        {
            deadline.Stop();
        }
    }
}
