using System.Buffers.Binary;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using OrleansStorage.Security;
using static OrleansStorage.Client.Nbd.NbdProtocol;

namespace OrleansStorage.Client.Nbd;

/// <summary>The handshake: option negotiation, STARTTLS (x509 or a pre-shared key), becoming a session, and binding an export.</summary>
internal sealed partial class NbdConnection
{
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
}
