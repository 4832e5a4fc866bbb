using System.Buffers.Binary;
using System.Net;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Nbd;

/// <summary>The NBD server, byte by byte, against a real storage cluster.</summary>
[Collection(StorageClusterCollection.Name)]
public sealed class NbdProtocolTests(StorageClusterFixture fixture) : IAsyncLifetime
{
    private const uint Einval = 22;
    private const uint Enospc = 28;
    private const long VolumeSize = 8L << 20;

    private readonly string _volume = "nbd-" + Guid.NewGuid().ToString("N")[..12];
    private NbdServer? _server;

    private IPEndPoint Endpoint => _server!.LocalEndpoint;

    public async Task InitializeAsync()
    {
        if (!fixture.Available)
        {
            return;
        }
        await fixture.Client.CreateVolumeAsync(_volume, VolumeSize, 2);
        _server = new NbdServer(fixture.Client, new NbdServerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), MaxRequestBytes = 1 << 20 }, NullLogger.Instance);
        _server.Start();
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task Handshake_offers_fixed_newstyle_and_no_zeroes_and_rejects_unknown_client_flags()
    {
        fixture.SkipIfUnavailable();
        await using (var client = await NbdTestClient.ConnectAsync(Endpoint))
        {
            Assert.Equal(3, client.HandshakeFlags);
        }
        await using var bad = await NbdTestClient.ConnectAsync(Endpoint, clientFlags: 0x80);
        Assert.True(await bad.IsClosedByServerAsync());
    }

    [SkippableFact]
    public async Task List_names_every_volume_and_rejects_data()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.SendOptionAsync(3, []);
        var replies = await client.ReadOptionRepliesAsync();
        Assert.Equal(1u, replies[^1].Type);
        var names = replies.Where(r => r.Type == 2).Select(r => Encoding.UTF8.GetString(r.Data, 4, (int)BinaryPrimitives.ReadUInt32BigEndian(r.Data))).ToList();
        Assert.Contains(_volume, names);

        await client.SendOptionAsync(3, [1, 2, 3]);
        Assert.Equal(0x80000003u, (await client.ReadOptionReplyAsync()).Type);
    }

    [SkippableFact]
    public async Task Info_describes_the_export_and_refuses_unknown_or_malformed_requests()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.SendOptionAsync(6, NbdTestClient.NameAndInfoRequests(_volume, 1, 3));
        var replies = await client.ReadOptionRepliesAsync();
        Assert.Equal(1u, replies[^1].Type);
        var infos = replies.Where(r => r.Type == 3).ToDictionary(r => BinaryPrimitives.ReadUInt16BigEndian(r.Data), r => r.Data);
        Assert.Equal(VolumeSize, BinaryPrimitives.ReadInt64BigEndian(infos[0].AsSpan(2)));
        var flags = BinaryPrimitives.ReadUInt16BigEndian(infos[0].AsSpan(10));
        Assert.Equal(0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0040 | 0x0100, flags); // has flags, flush, fua, trim, write zeroes, multi-conn
        Assert.Equal(_volume, Encoding.UTF8.GetString(infos[1], 2, infos[1].Length - 2));
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(6)));
        Assert.Equal(1u << 20, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(10)));

        await client.SendOptionAsync(6, NbdTestClient.NameAndInfoRequests("no-such-volume"));
        Assert.Equal(0x80000006u, (await client.ReadOptionReplyAsync()).Type);

        var malformed = NbdTestClient.NameAndInfoRequests(_volume, 1);
        BinaryPrimitives.WriteUInt32BigEndian(malformed, 9999); // name length past the option
        await client.SendOptionAsync(7, malformed);
        Assert.Equal(0x80000003u, (await client.ReadOptionReplyAsync()).Type);

        // After refusals the same connection still negotiates normally.
        await client.GoAsync(_volume);
        Assert.Equal(VolumeSize, client.ExportSize);
    }

    [SkippableFact]
    public async Task Unknown_options_are_unsupported_tls_is_refused_and_abort_is_acknowledged()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.SendOptionAsync(99, [1, 2, 3, 4]);
        Assert.Equal(0x80000001u, (await client.ReadOptionReplyAsync()).Type);
        await client.SendOptionAsync(5, []);
        Assert.Equal(0x80000002u, (await client.ReadOptionReplyAsync()).Type);
        await client.SendOptionAsync(10, NbdTestClient.MetaContextQuery(_volume, "base:allocation"));
        Assert.Equal(0x80000003u, (await client.ReadOptionReplyAsync()).Type); // needs structured replies first
        await client.SendOptionAsync(2, []);
        Assert.Equal(1u, (await client.ReadOptionReplyAsync()).Type);
        Assert.True(await client.IsClosedByServerAsync());
    }

    [SkippableFact]
    public async Task List_meta_context_offers_base_allocation()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.SendOptionAsync(8, []);
        await client.ReadOptionRepliesAsync();
        await client.SendOptionAsync(9, NbdTestClient.MetaContextQuery(_volume));
        var replies = await client.ReadOptionRepliesAsync();
        Assert.Equal("base:allocation", Encoding.UTF8.GetString(replies.Single(r => r.Type == 4).Data, 4, 15));
        await client.SendOptionAsync(9, NbdTestClient.MetaContextQuery(_volume, "qemu:dirty-bitmap:x"));
        Assert.Single(await client.ReadOptionRepliesAsync()); // valid query, no match: just ACK
    }

    [SkippableFact]
    public async Task Export_name_enters_transmission_or_closes_for_an_unknown_export()
    {
        fixture.SkipIfUnavailable();
        await using (var client = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await client.SendOptionAsync(1, Encoding.UTF8.GetBytes(_volume));
            var reply = await client.ReadAsync(10); // no zeroes negotiated
            Assert.Equal(VolumeSize, BinaryPrimitives.ReadInt64BigEndian(reply));
            await client.SendRequestAsync(1, 7, 0, 4, payload: [1, 2, 3, 4]);
            var written = await client.ReadReplyAsync();
            Assert.Equal((7ul, 0u), (written.Handle, written.Error));
        }
        await using (var legacy = await NbdTestClient.ConnectAsync(Endpoint, clientFlags: 1))
        {
            await legacy.SendOptionAsync(1, Encoding.UTF8.GetBytes(_volume));
            var reply = await legacy.ReadAsync(134); // 124 zero bytes follow without NO_ZEROES
            Assert.All(reply[10..], b => Assert.Equal(0, b));
        }
        await using var unknown = await NbdTestClient.ConnectAsync(Endpoint);
        await unknown.SendOptionAsync(1, Encoding.UTF8.GetBytes("no-such-volume"));
        Assert.True(await unknown.IsClosedByServerAsync());
    }

    [SkippableFact]
    public async Task Write_read_flush_trim_and_write_zeroes_with_simple_replies()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume, structured: false);
        var data = Replicas.RandomBytes(200_000, seed: 5);
        await client.SendRequestAsync(1, 1, 1_000_000, (uint)data.Length, flags: 1 /* FUA */, payload: data);
        Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(0, 2, 1_000_000, (uint)data.Length);
        Assert.Equal(data, (await client.ReadReplyAsync(data.Length)).Data);
        await client.SendRequestAsync(3, 3, 0, 0);
        Assert.Equal(0u, (await client.ReadReplyAsync()).Error);

        await client.SendRequestAsync(4, 4, 1_000_000, 50_000); // trim
        Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(6, 5, 1_100_000, 10_000, flags: 2 /* NO_HOLE */);
        Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(6, 6, 1_150_000, 10_000);
        Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
        Array.Clear(data, 0, 50_000);
        Array.Clear(data, 100_000, 10_000);
        Array.Clear(data, 150_000, 10_000);
        await client.SendRequestAsync(0, 7, 1_000_000, (uint)data.Length);
        Assert.Equal(data, (await client.ReadReplyAsync(data.Length)).Data);
    }

    [SkippableFact]
    public async Task Structured_reads_send_data_chunks_and_holes_for_never_written_ranges()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume);
        Assert.NotEqual(0, client.TransmissionFlags & 0x0080); // DF offered with structured replies
        var data = Replicas.RandomBytes(4096, seed: 6);
        await client.SendRequestAsync(1, 1, 8192, 4096, payload: data);
        await client.ReadReplyAsync();

        await client.SendRequestAsync(0, 2, 8192, 4096);
        var chunk = await client.ReadReplyAsync();
        Assert.Equal((ushort)1, chunk.ChunkType);
        Assert.Equal(1, chunk.ChunkFlags); // DONE
        Assert.Equal(8192ul, BinaryPrimitives.ReadUInt64BigEndian(chunk.Data));
        Assert.Equal(data, chunk.Data[8..]);

        await client.SendRequestAsync(0, 3, 5L << 20, 65536);
        var hole = await client.ReadReplyAsync();
        Assert.Equal((ushort)2, hole.ChunkType);
        Assert.Equal(5ul << 20, BinaryPrimitives.ReadUInt64BigEndian(hole.Data));
        Assert.Equal(65536u, BinaryPrimitives.ReadUInt32BigEndian(hole.Data.AsSpan(8)));

        await client.SendRequestAsync(0, 4, 5L << 20, 4096, flags: 4 /* DF */);
        var unfragmented = await client.ReadReplyAsync();
        Assert.Equal((ushort)1, unfragmented.ChunkType);
        Assert.All(unfragmented.Data[8..], b => Assert.Equal(0, b));
    }

    [SkippableFact]
    public async Task Block_status_reports_written_ranges_as_data_and_the_rest_as_holes()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume);
        await client.SendRequestAsync(1, 1, 1L << 20, 65536, payload: Replicas.RandomBytes(65536, 1));
        await client.ReadReplyAsync();

        await client.SendRequestAsync(7, 2, 0, 4u << 20);
        var reply = await client.ReadReplyAsync();
        Assert.Equal((ushort)5, reply.ChunkType);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(reply.Data));
        var extents = Enumerable.Range(0, (reply.Data.Length - 4) / 8)
            .Select(i => (Length: BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(4 + 8 * i)), Flags: BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(8 + 8 * i))))
            .ToList();
        Assert.Equal([(1u << 20, 3u), (65536u, 0u), ((3u << 20) - 65536, 3u)], extents);

        await client.SendRequestAsync(7, 3, 0, 4u << 20, flags: 8 /* REQ_ONE */);
        var one = await client.ReadReplyAsync();
        Assert.Equal(12, one.Data.Length);
    }

    [SkippableFact]
    public async Task Bad_requests_get_the_protocol_error_and_the_connection_carries_on()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume, structured: true, allocation: false);

        await client.SendRequestAsync(0, 1, (ulong)VolumeSize - 100, 200);
        Assert.Equal(Einval, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(1, 2, (ulong)VolumeSize - 100, 200, payload: new byte[200]);
        Assert.Equal(Enospc, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(1, 3, ulong.MaxValue - 10, 100, payload: new byte[100]);
        Assert.Equal(Enospc, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(42, 4, 0, 0);
        Assert.Equal(Einval, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(0, 5, 0, 10, flags: 0x40);
        Assert.Equal(Einval, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(7, 6, 0, 4096); // block status without the context
        Assert.Equal(Einval, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(0, 7, 0, 2u << 20); // past the maximum block size
        Assert.Equal(Einval, (await client.ReadReplyAsync()).Error);

        await client.SendRequestAsync(0, 8, 0, 16);
        var fine = await client.ReadReplyAsync();
        Assert.Equal((8ul, 0u), (fine.Handle, fine.Error));
    }

    [SkippableFact]
    public async Task Pipelined_requests_are_all_answered_and_matched_by_handle()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume, structured: true, allocation: false);
        const int count = 64;
        var blocks = Enumerable.Range(0, count).Select(i => Replicas.RandomBytes(65536, 100 + i)).ToList();
        for (var i = 0; i < count; i++)
        {
            await client.SendRequestAsync(1, (ulong)i, (ulong)i * 65536, 65536, payload: blocks[i]);
        }
        var acked = new HashSet<ulong>();
        for (var i = 0; i < count; i++)
        {
            var reply = await client.ReadReplyAsync();
            Assert.Equal(0u, reply.Error);
            Assert.True(acked.Add(reply.Handle));
        }
        for (var i = 0; i < count; i++)
        {
            await client.SendRequestAsync(0, 1000ul + (ulong)i, (ulong)i * 65536, 65536);
        }
        for (var i = 0; i < count; i++)
        {
            var reply = await client.ReadReplyAsync();
            var index = (int)(reply.Handle - 1000);
            Assert.Equal(blocks[index], reply.Data[8..]);
        }
    }

    [SkippableFact]
    public async Task Malformed_traffic_closes_only_that_connection()
    {
        fixture.SkipIfUnavailable();
        await using (var badOptionMagic = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await badOptionMagic.SendRawOptionAsync(0x1122334455667788, 3, 0, []);
            Assert.True(await badOptionMagic.IsClosedByServerAsync());
        }
        await using (var absurdOption = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await absurdOption.SendRawOptionAsync(NbdTestClient.OptionMagic, 7, 0xFFFFFFF0, []);
            Assert.True(await absurdOption.IsClosedByServerAsync());
        }
        await using (var badRequestMagic = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await badRequestMagic.GoAsync(_volume);
            await badRequestMagic.SendRequestAsync(0, 1, 0, 10, magic: 0xdeadbeef);
            Assert.True(await badRequestMagic.IsClosedByServerAsync());
        }
        await using (var hugeWrite = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await hugeWrite.GoAsync(_volume);
            await hugeWrite.SendRequestAsync(1, 1, 0, 0xFFFFFF00);
            Assert.True(await hugeWrite.IsClosedByServerAsync());
        }
        await using (var vanishing = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await vanishing.GoAsync(_volume);
            await vanishing.SendRequestAsync(1, 1, 0, 65536, payload: new byte[1000]); // payload cut short
        }
        await using (var truncated = await NbdTestClient.ConnectAsync(Endpoint))
        {
            await truncated.WriteAsync([0x49, 0x48, 0x41]); // a third of an option header, then gone
        }

        // The server is still up and the volume unharmed.
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume);
        await client.SendRequestAsync(0, 9, 0, 4096);
        var reply = await client.ReadReplyAsync();
        Assert.Equal(0u, reply.Error);
    }

    [SkippableFact]
    public async Task Io_continues_while_the_epoch_changes_underneath()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume, structured: true, allocation: false);
        var blocks = Enumerable.Range(0, 48).Select(i => Replicas.RandomBytes(65536, 500 + i)).ToList();
        var changes = Task.Run(async () =>
        {
            for (var i = 0; i < 4; i++)
            {
                await fixture.Client.CreateVolumeAsync($"{_volume}-e{i}", 4096, 1);
            }
            await fixture.Client.ResizeVolumeAsync(_volume, 2 * VolumeSize);
        });
        for (var i = 0; i < blocks.Count; i++)
        {
            await client.SendRequestAsync(1, (ulong)i, (ulong)i * 65536, 65536, payload: blocks[i]);
            if (i % 8 == 0)
            {
                await Task.Delay(20);
            }
        }
        for (var i = 0; i < blocks.Count; i++)
        {
            Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
        }
        await changes;
        for (var i = 0; i < blocks.Count; i++)
        {
            await client.SendRequestAsync(0, 100ul + (ulong)i, (ulong)i * 65536, 65536);
            var reply = await client.ReadReplyAsync();
            Assert.Equal(blocks[(int)reply.Handle - 100], reply.Data[8..]);
        }
    }

    [SkippableFact]
    public async Task Disconnect_answers_outstanding_requests_before_closing()
    {
        fixture.SkipIfUnavailable();
        await using var client = await NbdTestClient.ConnectAsync(Endpoint);
        await client.GoAsync(_volume, structured: false);
        var data = Replicas.RandomBytes(1 << 20, 3);
        await client.SendRequestAsync(1, 1, 0, (uint)data.Length, payload: data);
        await client.SendRequestAsync(2, 2, 0, 0); // DISC right behind the write
        var written = await client.ReadReplyAsync();
        Assert.Equal((1ul, 0u), (written.Handle, written.Error));
        Assert.True(await client.IsClosedByServerAsync());
        var back = new byte[data.Length];
        await (await fixture.Client.OpenVolumeAsync(_volume)).ReadAsync(0, back);
        Assert.Equal(data, back);
    }
}
