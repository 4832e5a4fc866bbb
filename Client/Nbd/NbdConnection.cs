using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging;
using OrleansStorage.Auth;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Security;
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
internal sealed class NbdConnection : IAsyncDisposable
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

    // ---------------------------------------------------------------- handshake

    /// <summary>Returns true when the client chose an export and transmission begins.</summary>
    private async Task<bool> HandshakeAsync(CancellationToken cancellationToken)
    {
        var greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, InitPassword);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), OptionMagic);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), FlagFixedNewstyle | FlagNoZeroes);
        await _stream.WriteAsync(greeting, cancellationToken);

        var header = new byte[16];
        await _stream.ReadExactlyAsync(header.AsMemory(0, 4), cancellationToken);
        var clientFlags = BinaryPrimitives.ReadUInt32BigEndian(header);
        if ((clientFlags & ~(ClientFlagFixedNewstyle | ClientFlagNoZeroes)) != 0)
        {
            throw new NbdProtocolException($"unknown client flags 0x{clientFlags:x}");
        }
        _noZeroes = (clientFlags & ClientFlagNoZeroes) != 0;

        while (true)
        {
            await _stream.ReadExactlyAsync(header, cancellationToken);
            if (BinaryPrimitives.ReadUInt64BigEndian(header) != OptionMagic)
            {
                throw new NbdProtocolException("bad option magic");
            }
            var option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            if (length > _options.MaxOptionBytes)
            {
                throw new NbdProtocolException($"option {option} carries {length} bytes; the limit is {_options.MaxOptionBytes}");
            }
            var data = new byte[length];
            await _stream.ReadExactlyAsync(data, cancellationToken);

            if (_options.Tls == NbdTlsMode.Require && _tlsClient is null && option is not (OptStartTls or OptAbort))
            {
                if (option == OptExportName)
                {
                    // No reply can carry an error here: the protocol says to close.
                    throw new NbdProtocolException("NBD_OPT_EXPORT_NAME in plain text on a server that requires TLS");
                }
                await RefuseOptionAsync(option, RepErrTlsRequired, "this server requires TLS: send NBD_OPT_STARTTLS first", cancellationToken);
                continue;
            }

            switch (option)
            {
                case OptExportName:
                    {
                        var name = Encoding.UTF8.GetString(data);
                        if (!await BindExportAsync(name))
                        {
                            // This option cannot answer with an error: the protocol says to close.
                            throw new NbdProtocolException($"NBD_OPT_EXPORT_NAME for unknown export '{NbdLog.Printable(name)}'");
                        }
                        BecomeSession(); // before the reply: this option cannot answer with an error
                        var reply = new byte[_noZeroes ? 10 : 134];
                        BinaryPrimitives.WriteInt64BigEndian(reply, _exportSize);
                        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags(_structuredReplies, _readOnly));
                        await _stream.WriteAsync(reply, cancellationToken);
                        return true;
                    }
                case OptAbort:
                    await SendOptionReplyAsync(option, RepAck, [], cancellationToken);
                    return false;
                case OptList:
                    if (length != 0)
                    {
                        await RefuseOptionAsync(option, RepErrInvalid, "NBD_OPT_LIST takes no data", cancellationToken);
                        break;
                    }
                    foreach (var name in await _exports.ListAsync(_grant))
                    {
                        var nameBytes = Encoding.UTF8.GetBytes(name);
                        var entry = new byte[4 + nameBytes.Length];
                        BinaryPrimitives.WriteUInt32BigEndian(entry, (uint)nameBytes.Length);
                        nameBytes.CopyTo(entry, 4);
                        await SendOptionReplyAsync(option, RepServer, entry, cancellationToken);
                    }
                    await SendOptionReplyAsync(option, RepAck, [], cancellationToken);
                    break;
                case OptStartTls:
                    if (_options.Tls == NbdTlsMode.Off)
                    {
                        await RefuseOptionAsync(option, RepErrPolicy, "TLS is not offered by this server", cancellationToken);
                    }
                    else if (length != 0 || _tlsClient is not null)
                    {
                        await RefuseOptionAsync(option, RepErrInvalid, length != 0 ? "NBD_OPT_STARTTLS takes no data" : "TLS is already on", cancellationToken);
                    }
                    else
                    {
                        await SendOptionReplyAsync(option, RepAck, [], cancellationToken);
                        await StartTlsAsync(cancellationToken);
                    }
                    break;
                case OptInfo:
                case OptGo:
                    if (await InfoOrGoAsync(option, data, cancellationToken) && option == OptGo)
                    {
                        return true;
                    }
                    break;
                case OptStructuredReply:
                    if (length != 0)
                    {
                        await RefuseOptionAsync(option, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data", cancellationToken);
                        break;
                    }
                    _structuredReplies = true;
                    await SendOptionReplyAsync(option, RepAck, [], cancellationToken);
                    break;
                case OptListMetaContext:
                case OptSetMetaContext:
                    await MetaContextAsync(option, data, cancellationToken);
                    break;
                default:
                    await RefuseOptionAsync(option, RepErrUnsup, $"option {option} is not supported", cancellationToken);
                    break;
            }
        }
    }

    /// <summary>
    /// The TLS handshake on the same socket, after STARTTLS was acknowledged: the client must
    /// present a client certificate of the cluster's authority, which names it. What was
    /// negotiated in plain text is forgotten, as the protocol asks.
    /// </summary>
    private async Task StartTlsAsync(CancellationToken cancellationToken)
    {
        if (_options.TlsPsk is { } keys)
        {
            await StartPskTlsAsync(keys, cancellationToken);
            return;
        }
        var trust = _options.TlsClientTrust ?? throw new InvalidOperationException("TLS without the authority to check clients against");
        string? refusal = null;
        var tls = new SslStream(_stream, leaveInnerStreamOpen: false, (_, certificate, _, _) =>
        {
            using var presented = certificate is null ? null : new X509Certificate2(certificate);
            refusal = trust.Refusal(presented, CertificateRole.Client);
            return refusal is null;
        });
        _stream = tls;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.TlsHandshakeTimeout);
        try
        {
            await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = _options.TlsCertificate,
                ClientCertificateRequired = true,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            }, timeout.Token);
        }
        catch (AuthenticationException ex) when (refusal is not null)
        {
            throw new AuthenticationException(refusal, ex);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new AuthenticationException($"the TLS handshake took longer than {_options.TlsHandshakeTimeout.TotalSeconds:0} s");
        }
        using var client = new X509Certificate2(tls.RemoteCertificate!);
        await OnTlsStartedAsync(ClusterCertificates.NameOf(client));
    }

    /// <summary>STARTTLS with a pre-shared key: the username the client proves the key of names it.</summary>
    private async Task StartPskTlsAsync(NbdPskKeys keys, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.TlsHandshakeTimeout);
        try
        {
            var tls = await NbdPskTls.AcceptAsync(_stream, keys, timeout.Token);
            _stream = tls;
            await OnTlsStartedAsync(tls.User);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new AuthenticationException($"the TLS handshake took longer than {_options.TlsHandshakeTimeout.TotalSeconds:0} s");
        }
    }

    /// <summary>What was negotiated in plain text is forgotten, as the protocol asks; the client is now known by name.</summary>
    private async Task OnTlsStartedAsync(string client)
    {
        _tlsClient = client;
        _grant = await _exports.GrantOfAsync(client);
        BecomeSession(); // it proved who it is: no longer one that newer connections displace
        _structuredReplies = false;
        _allocationContextExport = null;
    }

    /// <summary>
    /// Keeps a TLS client's session within its grant as it changes (<see cref="NbdGrantWatch"/>):
    /// a grant that no longer allows writing the volume turns the export read-only (writes answer
    /// EPERM from then on), one that no longer allows reading it closes the connection. A grant
    /// that widens changes nothing: the client was told the export is read-only and reconnects
    /// to write. Returns what stops following it; null for a client the cluster checks nothing of.
    /// </summary>
    private IDisposable? FollowGrant(CancellationTokenSource requests)
    {
        if (_grant is null || _tlsClient is null || _volume is not { } volume)
        {
            return null;
        }
        var watched = _server.Grants.Watch(_grant);
        var client = _tlsClient;
        void Narrow(ClientGrant grant)
        {
            if (!grant.Allows(CapabilityLevel.Read, volume.VolumeName))
            {
                _revoked = true; // requests already decrypted and buffered are refused too
                NbdLog.AccessLost(_logger, _remote, client, Described(grant), "read", volume.Name, "connection closed");
                try
                {
                    requests.Cancel();
                }
                catch (ObjectDisposedException)
                {
                    // the session ended meanwhile
                }
            }
            else if (!_readOnly && !grant.Allows(CapabilityLevel.Write, volume.VolumeName))
            {
                _readOnly = true;
                NbdLog.AccessLost(_logger, _remote, client, Described(grant), "write", volume.Name, "writes, trims and write-zeroes now answer EPERM");
            }
        }
        static string Described(ClientGrant grant) => grant.Capabilities.Length == 0 ? "no grant" : $"'{Capability.Format(grant.Capabilities)}'";
        watched.Changed += Narrow;
        Narrow(watched.Grant); // another session's lookup may have seen a change since this handshake
        return new GrantFollowing(_server.Grants, watched, Narrow);
    }

    private sealed class GrantFollowing(NbdGrantWatch grants, NbdGrantWatch.Watched watched, Action<ClientGrant> narrow) : IDisposable
    {
        public void Dispose()
        {
            watched.Changed -= narrow;
            grants.Unwatch(watched);
        }
    }

    /// <summary>Turns this connection into a session (<see cref="NbdAdmission"/>), or ends it quietly when the server is full.</summary>
    private void BecomeSession()
    {
        if (_server.Establish(_slot) is { } refusal)
        {
            throw new NbdAdmission.RefusedException(refusal);
        }
    }

    private async Task<bool> BindExportAsync(string name)
    {
        _volume = await _exports.ResolveAsync(name, _grant);
        if (_volume is null)
        {
            return false;
        }
        _exportSize = _volume.SizeBytes;
        _readOnly = NbdExports.IsReadOnlyFor(_grant, _volume);
        _boundWritable = !_readOnly;
        if (_allocationContextExport is not null && _allocationContextExport != name && _allocationContextExport != _volume.Name)
        {
            _allocationContextExport = null; // the context was negotiated for another export
        }
        return true;
    }

    /// <summary>NBD_OPT_INFO and NBD_OPT_GO: name, then a list of information requests.</summary>
    private async Task<bool> InfoOrGoAsync(uint option, byte[] data, CancellationToken cancellationToken)
    {
        if (data.Length < 6)
        {
            await RefuseOptionAsync(option, RepErrInvalid, "option data too short", cancellationToken);
            return false;
        }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 6)
        {
            await RefuseOptionAsync(option, RepErrInvalid, "export name length runs past the option", cancellationToken);
            return false;
        }
        var name = Encoding.UTF8.GetString(data, 4, (int)nameLength);
        var requestCount = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(4 + (int)nameLength));
        if (data.Length != 4 + nameLength + 2 + 2 * requestCount)
        {
            await RefuseOptionAsync(option, RepErrInvalid, "information request count does not match the option length", cancellationToken);
            return false;
        }
        var requests = new HashSet<ushort>();
        for (var i = 0; i < requestCount; i++)
        {
            requests.Add(BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(4 + (int)nameLength + 2 + 2 * i)));
        }
        var volume = await _exports.ResolveAsync(name, _grant);
        if (volume is null)
        {
            await RefuseOptionAsync(option, RepErrUnknown, $"no export named '{NbdLog.Printable(name)}'", cancellationToken);
            return false;
        }

        var export = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(export, InfoExport);
        BinaryPrimitives.WriteInt64BigEndian(export.AsSpan(2), volume.SizeBytes);
        BinaryPrimitives.WriteUInt16BigEndian(export.AsSpan(10), TransmissionFlags(_structuredReplies, NbdExports.IsReadOnlyFor(_grant, volume)));
        await SendOptionReplyAsync(option, RepInfo, export, cancellationToken);
        if (requests.Contains(InfoName))
        {
            await SendOptionReplyAsync(option, RepInfo, InfoString(InfoName, volume.Name), cancellationToken);
        }
        if (requests.Contains(InfoDescription))
        {
            await SendOptionReplyAsync(option, RepInfo, InfoString(InfoDescription,
                $"OrleansStorage volume, {volume.Info.ReplicationFactor} replica(s)"), cancellationToken);
        }
        // Any byte offset and length works; 4 KiB is what the segment files are allocated in.
        var blockSize = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(blockSize, InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(2), 1);
        BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(6), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(10), (uint)_options.MaxRequestBytes);
        await SendOptionReplyAsync(option, RepInfo, blockSize, cancellationToken);
        if (option == OptGo && _server.Establish(_slot) is { } refusal)
        {
            await RefuseOptionAsync(option, RepErrPolicy, $"the server is full: {refusal}", cancellationToken);
            return false;
        }
        await SendOptionReplyAsync(option, RepAck, [], cancellationToken);

        if (option == OptGo)
        {
            return await BindExportAsync(name);
        }
        return true;
    }

    private static byte[] InfoString(ushort type, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var reply = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(reply, type);
        bytes.CopyTo(reply, 2);
        return reply;
    }

    /// <summary>NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name, then queries. We offer base:allocation.</summary>
    private async Task MetaContextAsync(uint option, byte[] data, CancellationToken cancellationToken)
    {
        if (!_structuredReplies)
        {
            await RefuseOptionAsync(option, RepErrInvalid, "negotiate structured replies first", cancellationToken);
            return;
        }
        var at = 0;
        string? ReadString()
        {
            if (data.Length - at < 4)
            {
                return null;
            }
            var length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(at));
            if (length > data.Length - at - 4)
            {
                return null;
            }
            var text = Encoding.UTF8.GetString(data, at + 4, (int)length);
            at += 4 + (int)length;
            return text;
        }
        var name = ReadString();
        if (name is null || data.Length - at < 4)
        {
            await RefuseOptionAsync(option, RepErrInvalid, "malformed meta context option", cancellationToken);
            return;
        }
        var queryCount = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(at));
        at += 4;
        var queries = new List<string>();
        for (var i = 0; i < queryCount; i++)
        {
            var query = ReadString();
            if (query is null)
            {
                await RefuseOptionAsync(option, RepErrInvalid, "malformed meta context query", cancellationToken);
                return;
            }
            queries.Add(query);
        }
        if (at != data.Length)
        {
            await RefuseOptionAsync(option, RepErrInvalid, "meta context option has trailing bytes", cancellationToken);
            return;
        }
        if (await _exports.ResolveAsync(name, _grant) is null)
        {
            await RefuseOptionAsync(option, RepErrUnknown, $"no export named '{NbdLog.Printable(name)}'", cancellationToken);
            return;
        }

        var matches = option == OptListMetaContext
            ? queries.Count == 0 || queries.Any(q => q is "base:" or BaseAllocation)
            : queries.Contains(BaseAllocation);
        if (option == OptSetMetaContext)
        {
            _allocationContextExport = matches ? name : null;
        }
        if (matches)
        {
            var contextName = Encoding.UTF8.GetBytes(BaseAllocation);
            var reply = new byte[4 + contextName.Length];
            BinaryPrimitives.WriteUInt32BigEndian(reply, option == OptSetMetaContext ? BaseAllocationId : 0);
            contextName.CopyTo(reply, 4);
            await SendOptionReplyAsync(option, RepMetaContext, reply, cancellationToken);
        }
        await SendOptionReplyAsync(option, RepAck, [], cancellationToken);
    }

    private async Task RefuseOptionAsync(uint option, uint error, string message, CancellationToken cancellationToken)
    {
        _server.CountRejected();
        NbdLog.OptionRefused(_logger, _remote, option, message);
        await SendOptionReplyAsync(option, error, Encoding.UTF8.GetBytes(message), cancellationToken);
    }

    private async Task SendOptionReplyAsync(uint option, uint type, byte[] data, CancellationToken cancellationToken)
    {
        var reply = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(reply, OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)data.Length);
        data.CopyTo(reply, 20);
        await _stream.WriteAsync(reply, cancellationToken);
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

    // ---------------------------------------------------------------- in-flight budget

    private async Task AcquireBudgetAsync(long cost, CancellationToken cancellationToken)
    {
        // One request is always admitted, however large, so a request never waits for itself.
        while (Interlocked.Read(ref _inFlightCost) > 0 && Interlocked.Read(ref _inFlightCost) + cost > _options.MaxInFlightBytesPerConnection)
        {
            await _budgetFreed.WaitAsync(cancellationToken);
        }
        Interlocked.Add(ref _inFlightCost, cost);
        try
        {
            // Then the server's share: whatever every connection does, the server holds at most its budget.
            await _server.Memory.AcquireAsync(cost, cancellationToken);
        }
        catch
        {
            Interlocked.Add(ref _inFlightCost, -cost);
            throw;
        }
    }

    private void ReleaseBudget(long cost)
    {
        _server.Memory.Release(cost);
        Interlocked.Add(ref _inFlightCost, -cost);
        if (_budgetFreed.CurrentCount == 0)
        {
            _budgetFreed.Release();
        }
    }

    private async Task WaitForInFlightAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (Interlocked.Read(ref _inFlightCost) > 0 && DateTime.UtcNow < deadline)
        {
            await _budgetFreed.WaitAsync(TimeSpan.FromMilliseconds(100));
        }
    }

    /// <summary>A command as a metric label: one of a few known values, whatever number a client sends.</summary>
    private static string CommandLabel(ushort type) => type switch
    {
        CmdRead => "read",
        CmdWrite => "write",
        CmdFlush => "flush",
        CmdTrim => "trim",
        CmdWriteZeroes => "write_zeroes",
        CmdBlockStatus => "block_status",
        _ => "other",
    };

    private static string ErrorLabel(uint error) => error switch
    {
        0 => "",
        Eperm => "eperm",
        Eio => "eio",
        Enomem => "enomem",
        Einval => "einval",
        Enospc => "enospc",
        Eoverflow => "eoverflow",
        Eshutdown => "eshutdown",
        _ => "other",
    };

    private static string CommandName(ushort type) => type switch
    {
        CmdRead => "READ",
        CmdWrite => "WRITE",
        CmdFlush => "FLUSH",
        CmdTrim => "TRIM",
        CmdWriteZeroes => "WRITE_ZEROES",
        CmdBlockStatus => "BLOCK_STATUS",
        _ => $"command {type}",
    };
}
