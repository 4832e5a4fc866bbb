using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace OrleansStorage.Tests.Nbd;

/// <summary>A deliberately low-level NBD client for protocol tests: it sends exactly the bytes a test asks for.</summary>
public sealed class NbdTestClient : IAsyncDisposable
{
    public const ulong OptionMagic = 0x49484156454F5054;
    public const uint RequestMagic = 0x25609513;

    private TcpClient _tcp = new() { NoDelay = true };
    private NetworkStream _stream = null!;

    public ushort HandshakeFlags { get; private set; }
    public long ExportSize { get; private set; }
    public ushort TransmissionFlags { get; private set; }

    /// <param name="from">A loopback address of its own (127.0.0.N) to connect from, as a distinct client would.</param>
    /// <param name="receiveBuffer">A small receive buffer makes a client that never reads stall the server sooner.</param>
    public static async Task<NbdTestClient> ConnectAsync(IPEndPoint endpoint, uint clientFlags = 3, IPAddress? from = null, int? receiveBuffer = null)
    {
        var client = new NbdTestClient();
        if (from is not null)
        {
            client._tcp.Dispose();
            client._tcp = new TcpClient(new IPEndPoint(from, 0)) { NoDelay = true };
        }
        if (receiveBuffer is { } size)
        {
            client._tcp.ReceiveBufferSize = size;
        }
        await client._tcp.ConnectAsync(endpoint);
        client._stream = client._tcp.GetStream();
        var greeting = await client.ReadAsync(18);
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != 0x4e42444d41474943 || BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)) != OptionMagic)
        {
            throw new InvalidOperationException("bad greeting");
        }
        client.HandshakeFlags = BinaryPrimitives.ReadUInt16BigEndian(greeting.AsSpan(16));
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, clientFlags);
        await client.WriteAsync(flags);
        return client;
    }

    public Task WriteAsync(byte[] bytes) => _stream.WriteAsync(bytes).AsTask();

    public async Task<byte[]> ReadAsync(int count)
    {
        var buffer = new byte[count];
        await _stream.ReadExactlyAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        return buffer;
    }

    /// <summary>True when the server closed the connection (reads end) within the timeout.</summary>
    /// <summary>Reads and drops whatever the server sent until it closes; false if it has not closed within <paramref name="timeout"/>.</summary>
    public async Task<bool> DrainUntilClosedAsync(TimeSpan timeout)
    {
        var buffer = new byte[1 << 16];
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            while (await _stream.ReadAsync(buffer, deadline.Token) > 0)
            {
            }
            return true;
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public async Task<bool> IsClosedByServerAsync()
    {
        try
        {
            var buffer = new byte[1];
            var read = await _stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            return read == 0;
        }
        catch (IOException)
        {
            return true;
        }
    }

    public Task SendOptionAsync(uint option, byte[] data) => SendRawOptionAsync(OptionMagic, option, (uint)data.Length, data);

    public async Task SendRawOptionAsync(ulong magic, uint option, uint declaredLength, byte[] data)
    {
        var message = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, magic);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), declaredLength);
        data.CopyTo(message, 16);
        await WriteAsync(message);
    }

    public sealed record OptionReply(uint Option, uint Type, byte[] Data);

    public async Task<OptionReply> ReadOptionReplyAsync()
    {
        var header = await ReadAsync(20);
        if (BinaryPrimitives.ReadUInt64BigEndian(header) != 0x3e889045565a9)
        {
            throw new InvalidOperationException("bad option reply magic");
        }
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        return new OptionReply(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), await ReadAsync((int)length));
    }

    /// <summary>Reads option replies up to and including the final one (ACK or an error).</summary>
    public async Task<List<OptionReply>> ReadOptionRepliesAsync()
    {
        var replies = new List<OptionReply>();
        while (true)
        {
            var reply = await ReadOptionReplyAsync();
            replies.Add(reply);
            if (reply.Type == 1 || (reply.Type & 0x80000000) != 0)
            {
                return replies;
            }
        }
    }

    public static byte[] NameAndInfoRequests(string name, params ushort[] infos)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var data = new byte[4 + nameBytes.Length + 2 + 2 * infos.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)nameBytes.Length);
        nameBytes.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + nameBytes.Length), (ushort)infos.Length);
        for (var i = 0; i < infos.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + nameBytes.Length + 2 * i), infos[i]);
        }
        return data;
    }

    public static byte[] MetaContextQuery(string name, params string[] queries)
    {
        var parts = new List<byte>();
        void AddString(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            var length = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(length, (uint)bytes.Length);
            parts.AddRange(length);
            parts.AddRange(bytes);
        }
        AddString(name);
        var count = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(count, (uint)queries.Length);
        parts.AddRange(count);
        foreach (var q in queries)
        {
            AddString(q);
        }
        return [.. parts];
    }

    /// <summary>Structured replies, base:allocation, then NBD_OPT_GO: the way qemu and libnbd start.</summary>
    public async Task GoAsync(string export, bool structured = true, bool allocation = true)
    {
        if (structured)
        {
            await SendOptionAsync(8, []);
            Expect((await ReadOptionRepliesAsync())[^1].Type == 1, "structured replies refused");
            if (allocation)
            {
                await SendOptionAsync(10, MetaContextQuery(export, "base:allocation"));
                var replies = await ReadOptionRepliesAsync();
                Expect(replies[^1].Type == 1 && replies.Count == 2, "base:allocation refused");
            }
        }
        await SendOptionAsync(7, NameAndInfoRequests(export));
        var info = await ReadOptionRepliesAsync();
        Expect(info[^1].Type == 1, $"GO refused: {Encoding.UTF8.GetString(info[^1].Data)}");
        var exportInfo = info.First(r => r.Type == 3 && BinaryPrimitives.ReadUInt16BigEndian(r.Data) == 0).Data;
        ExportSize = BinaryPrimitives.ReadInt64BigEndian(exportInfo.AsSpan(2));
        TransmissionFlags = BinaryPrimitives.ReadUInt16BigEndian(exportInfo.AsSpan(10));
    }

    public Task SendRequestAsync(ushort type, ulong handle, ulong offset, uint length, ushort flags = 0, byte[]? payload = null, uint magic = RequestMagic)
    {
        var message = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(message, magic);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(message.AsSpan(8), handle);
        BinaryPrimitives.WriteUInt64BigEndian(message.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(24), length);
        payload?.CopyTo(message, 28);
        return WriteAsync(message);
    }

    /// <summary>One reply: a simple reply (Type = null; Data read only when <paramref name="simpleReadLength"/> > 0 and no error) or one structured chunk.</summary>
    public sealed record Reply(ulong Handle, uint Error, ushort? ChunkType, ushort ChunkFlags, byte[] Data);

    public async Task<Reply> ReadReplyAsync(int simpleReadLength = 0)
    {
        var magic = BinaryPrimitives.ReadUInt32BigEndian(await ReadAsync(4));
        if (magic == 0x67446698)
        {
            var rest = await ReadAsync(12);
            var error = BinaryPrimitives.ReadUInt32BigEndian(rest);
            var data = error == 0 && simpleReadLength > 0 ? await ReadAsync(simpleReadLength) : [];
            return new Reply(BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)), error, null, 0, data);
        }
        if (magic == 0x668e33ef)
        {
            var rest = await ReadAsync(16);
            var flags = BinaryPrimitives.ReadUInt16BigEndian(rest);
            var type = BinaryPrimitives.ReadUInt16BigEndian(rest.AsSpan(2));
            var handle = BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4));
            var payload = await ReadAsync((int)BinaryPrimitives.ReadUInt32BigEndian(rest.AsSpan(12)));
            var error = (type & 0x8000) != 0 ? BinaryPrimitives.ReadUInt32BigEndian(payload) : 0u;
            return new Reply(handle, error, type, flags, payload);
        }
        throw new InvalidOperationException($"bad reply magic 0x{magic:x}");
    }

    private static void Expect(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        await Task.CompletedTask;
    }
}
