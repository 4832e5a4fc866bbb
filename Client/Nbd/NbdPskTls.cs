using System.Globalization;
using System.Runtime.InteropServices;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;
using OrleansStorage.Errors;
using OrleansStorage.Security;

namespace OrleansStorage.Client.Nbd;

/// <summary>
/// The pre-shared keys an NBD export takes (<c>--tls-psk FILE</c>), in the format GnuTLS's
/// <c>psktool</c>, qemu's <c>tls-creds-psk</c> (<c>keys.psk</c>) and nbdkit read: one
/// <c>username:hexkey</c> per line. A username is a client name, judged by its grant as a
/// certificate's name is.
/// </summary>
public sealed class NbdPskKeys
{
    private readonly Dictionary<string, byte[]> _keys;

    private NbdPskKeys(Dictionary<string, byte[]> keys) => _keys = keys;

    public IReadOnlyCollection<string> Users => _keys.Keys;

    public byte[]? KeyOf(string user) => _keys.GetValueOrDefault(user);

    public static NbdPskKeys Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new InvalidRequestException($"--tls-psk {path}: no such file (make one with 'ostor pki psk NAME --file {path}')");
        }
        PkiDirectory.RefuseOpenKey(path);
        var keys = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (line.Trim().Length == 0)
            {
                continue;
            }
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            byte[] key;
            try
            {
                key = colon > 0 ? Convert.FromHexString(line[(colon + 1)..].Trim()) : [];
            }
            catch (FormatException)
            {
                key = [];
            }
            if (key.Length < 16)
            {
                throw new InvalidRequestException($"--tls-psk {path}, line {number}: not 'username:hexkey' with a key of at least 16 bytes");
            }
            keys[PkiDirectory.CheckedName(line[..colon])] = key;
        }
        return keys.Count > 0 ? new NbdPskKeys(keys) : throw new InvalidRequestException($"--tls-psk {path} holds no keys");
    }

    /// <summary>Adds or replaces <paramref name="user"/>'s line with a fresh 32-byte key; the file is kept 0600.</summary>
    public static void Issue(string path, string user)
    {
        PkiDirectory.CheckedName(user);
        var lines = File.Exists(path)
            ? File.ReadAllLines(path).Where(l => l.Trim().Length > 0 && !l.StartsWith(user + ":", StringComparison.Ordinal)).ToList()
            : [];
        lines.Add(string.Create(CultureInfo.InvariantCulture, $"{user}:{Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)).ToLowerInvariant()}"));
        PkiDirectory.WritePrivateFile(path, string.Concat(lines.Select(line => line + "\n")));
    }
}

/// <summary>
/// The server side of TLS with a pre-shared key (TLS 1.2, ECDHE-PSK or DHE-PSK suites), with
/// Bouncy Castle's protocol engine in its non-blocking mode: we move the bytes between it and
/// the socket ourselves, so a connection holds no thread while it waits. .NET's SslStream has no
/// PSK suites.
/// </summary>
internal sealed class NbdPskTls : Stream
{
    private const int ChunkSize = 16 * 1024;

    private readonly Stream _inner;
    private readonly TlsServerProtocol _protocol = new();
    private readonly object _engine = new();
    private readonly SemaphoreSlim _sending = new(1, 1);
    private readonly byte[] _incoming = new byte[ChunkSize];

    private NbdPskTls(Stream inner) => _inner = inner;

    /// <summary>The username the client proved it holds the key of.</summary>
    public string User { get; private set; } = "";

    /// <summary>Runs the handshake over <paramref name="inner"/>; throws if the client has no key here or proves none.</summary>
    public static async Task<NbdPskTls> AcceptAsync(Stream inner, NbdPskKeys keys, CancellationToken cancellationToken)
    {
        var tls = new NbdPskTls(inner);
        var identities = new PskIdentities(keys);
        try
        {
            lock (tls._engine)
            {
                tls._protocol.Accept(new Server(identities));
            }
            await tls.SendPendingAsync(cancellationToken);
            while (tls._protocol.IsHandshaking)
            {
                if (!await tls.ReceiveAsync(cancellationToken))
                {
                    throw new IOException("the client closed the connection during the TLS-PSK handshake");
                }
            }
        }
        catch (TlsFatalAlert alert)
        {
            throw new System.Security.Authentication.AuthenticationException(identities.Refusal ?? $"TLS-PSK handshake failed: {alert.Message}", alert);
        }
        tls.User = identities.Accepted ?? throw new System.Security.Authentication.AuthenticationException("TLS-PSK handshake named no user");
        return tls;
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            lock (_engine)
            {
                var available = _protocol.GetAvailableInputBytes();
                if (available > 0)
                {
                    var count = Math.Min(available, buffer.Length);
                    if (MemoryMarshal.TryGetArray<byte>(buffer, out var array))
                    {
                        return _protocol.ReadInput(array.Array!, array.Offset, count);
                    }
                    var copy = new byte[count];
                    var read = _protocol.ReadInput(copy, 0, count);
                    copy.AsSpan(0, read).CopyTo(buffer.Span);
                    return read;
                }
                if (_protocol.IsClosed)
                {
                    return 0;
                }
            }
            if (!await ReceiveAsync(cancellationToken))
            {
                return 0;
            }
        }
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        // One record at a time, in order: the engine encrypts, the socket sends what it made.
        await _sending.WaitAsync(cancellationToken);
        try
        {
            lock (_engine)
            {
                _protocol.WriteApplicationData(buffer.Span);
            }
            await SendPendingUnderLockAsync(cancellationToken);
        }
        finally
        {
            _sending.Release();
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    /// <summary>Reads what the socket has into the engine, and sends whatever that made it answer. False at the end of the stream.</summary>
    private async Task<bool> ReceiveAsync(CancellationToken cancellationToken)
    {
        var read = await _inner.ReadAsync(_incoming, cancellationToken);
        if (read == 0)
        {
            return false;
        }
        lock (_engine)
        {
            _protocol.OfferInput(_incoming, 0, read);
        }
        await SendPendingAsync(cancellationToken);
        return true;
    }

    private async Task SendPendingAsync(CancellationToken cancellationToken)
    {
        await _sending.WaitAsync(cancellationToken);
        try
        {
            await SendPendingUnderLockAsync(cancellationToken);
        }
        finally
        {
            _sending.Release();
        }
    }

    private async Task SendPendingUnderLockAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            byte[] output;
            lock (_engine)
            {
                var pending = _protocol.GetAvailableOutputBytes();
                if (pending == 0)
                {
                    return;
                }
                output = new byte[pending];
                _protocol.ReadOutput(output, 0, pending);
            }
            await _inner.WriteAsync(output, cancellationToken);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            try
            {
                lock (_engine)
                {
                    _protocol.Close();
                }
            }
            catch (IOException)
            {
            }
            _inner.Dispose();
            _sending.Dispose();
        }
        base.Dispose(disposing);
    }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush() => _inner.Flush();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count).GetAwaiter().GetResult();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer, offset, count).GetAwaiter().GetResult();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Hands the engine the key of the username a client names, and remembers who it was.</summary>
    private sealed class PskIdentities(NbdPskKeys keys) : TlsPskIdentityManager
    {
        public string? Accepted { get; private set; }

        public string? Refusal { get; private set; }

        public byte[]? GetHint() => null;

        public byte[]? GetPsk(byte[] identity)
        {
            var user = System.Text.Encoding.UTF8.GetString(identity);
            if (keys.KeyOf(user) is { } key)
            {
                Accepted = user;
                return (byte[])key.Clone(); // the engine wipes the key it is given once it has used it
            }
            Refusal = $"TLS-PSK user '{NbdLog.Printable(user)}' has no key here";
            return null;
        }
    }

    private sealed class Server(TlsPskIdentityManager identities) : PskTlsServer(new BcTlsCrypto(new SecureRandom()), identities)
    {
        protected override ProtocolVersion[] GetSupportedVersions() => ProtocolVersion.TLSv12.Only();
    }
}
