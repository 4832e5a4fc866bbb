using System.Net;
using System.Runtime.Versioning;
using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Security;
using OrleansStorage.Tests.Infrastructure;
using static OrleansStorage.Tests.Nbd.NbdClientTools;
using Xunit;

namespace OrleansStorage.Tests.Nbd;

/// <summary>
/// A TLS-only export (NBD_OPT_STARTTLS, x509 both ways) against real clients: qemu-img through
/// tls-creds-x509, nbdinfo with nbds://; and what it refuses: plain text, another authority's
/// client certificate, a local user who cannot read the client's key.
/// </summary>
[Collection(StorageClusterCollection.Name)]
[UnsupportedOSPlatform("windows")] // file modes and runuser are the point of one test
public sealed class NbdTlsTests(StorageClusterFixture fixture) : IAsyncLifetime
{
    private readonly string _volume = "tls-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _scratch = Directory.CreateTempSubdirectory("ostor-nbd-tls-").FullName;
    private PkiDirectory? _pki;
    private NbdServer? _server;

    private string Address => $"127.0.0.1:{_server!.LocalEndpoint.Port}";

    /// <summary>A folder of client credentials as qemu and libnbd read them.</summary>
    private string ClientDirectory => Path.Combine(_scratch, "client");

    public async Task InitializeAsync()
    {
        if (!fixture.Available)
        {
            return;
        }
        var now = DateTimeOffset.UtcNow;
        _pki = new PkiDirectory(Path.Combine(_scratch, "pki"));
        _pki.CreateAuthority("nbd-tls-test", now).Dispose();
        _pki.IssueServer("nbd", [IPAddress.Loopback], ["localhost"], now).Dispose();
        _pki.IssueClient("backup", now).Dispose();
        _pki.ExportForNbdClient("backup", ClientDirectory);
        await fixture.Client.CreateVolumeAsync(_volume, 16L << 20, 2);
        _server = new NbdServer(fixture.Client, new NbdServerOptions
        {
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            Tls = NbdTlsMode.Require,
            TlsCertificate = _pki.LoadIdentity(CertificateRole.Server, "nbd"),
            TlsClientTrust = _pki.LoadTrust(),
        }, NullLogger.Instance);
        _server.Start();
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
        Directory.Delete(_scratch, recursive: true);
    }

    [SkippableFact]
    public async Task Qemu_img_converts_into_and_out_of_a_tls_only_export_with_x509_certificates()
    {
        Require("qemu-img", "qemu-utils");
        await ConvertInAndOutAsync($"tls-creds-x509,id=tls0,endpoint=client,dir={ClientDirectory}", _server!.LocalEndpoint.Port, "x509");
    }

    /// <summary>qemu-img convert of 16 MiB into the export and back out with <paramref name="credentials"/> (id tls0): the same bytes.</summary>
    private async Task ConvertInAndOutAsync(string credentials, int port, string name)
    {
        var image = Path.Combine(_scratch, $"{name}-in.raw");
        await File.WriteAllBytesAsync(image, Replicas.RandomBytes(16 << 20, seed: name.Length));
        await RunAsync("qemu-img", "convert", "-n", "-f", "raw", image, "--object", credentials,
            "--target-image-opts", $"driver=nbd,host=127.0.0.1,port={port},export={_volume},tls-creds=tls0");
        var back = Path.Combine(_scratch, $"{name}-out.raw");
        await RunAsync("qemu-img", "convert", "--object", credentials,
            "--image-opts", $"driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port={port},file.export={_volume},file.tls-creds=tls0", "-O", "raw", back);
        Assert.Equal(Sha256(image), Sha256(back));
    }

    [SkippableFact]
    public async Task Nbdinfo_over_nbds_works_and_plain_text_or_a_stranger_or_another_user_is_refused()
    {
        Require("nbdinfo", "libnbd-bin");
        var info = await RunAsync("nbdinfo", $"nbds://{Address}/{_volume}?tls-certificates={ClientDirectory}");
        Assert.Contains("with TLS", info, StringComparison.Ordinal);

        var plain = await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("nbdinfo", $"nbd://{Address}/{_volume}"));
        Assert.Contains("not supported", plain.Message, StringComparison.OrdinalIgnoreCase);
        await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("nbdinfo", "--list", $"nbd://{Address}"));

        // A client certificate another authority issued, with our authority to check the server by.
        var stranger = new PkiDirectory(Path.Combine(_scratch, "stranger"));
        stranger.CreateAuthority("stranger", DateTimeOffset.UtcNow).Dispose();
        stranger.IssueClient("backup", DateTimeOffset.UtcNow).Dispose();
        var strangerDirectory = Path.Combine(_scratch, "stranger-client");
        stranger.ExportForNbdClient("backup", strangerDirectory);
        File.Copy(_pki!.AuthorityCertificatePath, Path.Combine(strangerDirectory, "ca-cert.pem"), overwrite: true);
        await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("nbdinfo", $"nbds://{Address}/{_volume}?tls-certificates={strangerDirectory}"));

        // Another local user cannot read the key, so it cannot connect at all.
        Prerequisites.Require(Environment.UserName == "root", "running nbdinfo as the user 'nobody' needs root");
        File.SetUnixFileMode(_scratch, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute);
        var nobody = await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("runuser", "-u", "nobody", "--", "nbdinfo", $"nbds://{Address}/{_volume}?tls-certificates={ClientDirectory}"));
        Assert.Contains("exited 1", nobody.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("with TLS", nobody.Message, StringComparison.Ordinal);
    }


    [SkippableFact]
    public async Task Qemu_img_and_nbdinfo_work_over_tls_psk_and_a_wrong_key_or_user_is_refused()
    {
        Require("qemu-img", "qemu-utils");
        Require("nbdinfo", "libnbd-bin");
        fixture.SkipIfUnavailable();
        // The keys file as 'ostor pki psk' writes it, in the folder layout qemu's tls-creds-psk reads.
        var pskDirectory = Directory.CreateDirectory(Path.Combine(_scratch, "psk")).FullName;
        var keys = Path.Combine(pskDirectory, "keys.psk");
        NbdPskKeys.Issue(keys, "backup");
        NbdPskKeys.Issue(keys, "other");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keys));
        await using var server = new NbdServer(fixture.Client, new NbdServerOptions
        {
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            Tls = NbdTlsMode.Require,
            TlsPsk = NbdPskKeys.Load(keys),
        }, NullLogger.Instance);
        server.Start();
        var port = server.LocalEndpoint.Port;

        await ConvertInAndOutAsync($"tls-creds-psk,id=tls0,endpoint=client,dir={pskDirectory},username=backup", port, "psk");

        var info = await RunAsync("nbdinfo", $"nbds://backup@127.0.0.1:{port}/{_volume}?tls-psk-file={keys}");
        Assert.Contains("with TLS", info, StringComparison.Ordinal);

        // A user this server has no key for, and the right user with a wrong key: refused at the handshake.
        var wrong = Path.Combine(_scratch, "wrong.psk");
        NbdPskKeys.Issue(wrong, "backup");
        NbdPskKeys.Issue(wrong, "nobody-here");
        await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("nbdinfo", $"nbds://backup@127.0.0.1:{port}/{_volume}?tls-psk-file={wrong}"));
        await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("nbdinfo", $"nbds://nobody-here@127.0.0.1:{port}/{_volume}?tls-psk-file={wrong}"));
        // Plain text: refused as on any TLS-only export.
        await Assert.ThrowsAsync<InvalidOperationException>(() => RunAsync("nbdinfo", $"nbd://127.0.0.1:{port}/{_volume}"));
    }

    [SkippableFact]
    public async Task In_plain_text_a_tls_only_export_answers_tls_required_and_closes_on_export_name()
    {
        fixture.SkipIfUnavailable();
        await using (var client = await NbdTestClient.ConnectAsync(_server!.LocalEndpoint))
        {
            foreach (var (option, data) in new (uint, byte[])[] { (3, []), (8, []), (7, NbdTestClient.NameAndInfoRequests(_volume)), (6, NbdTestClient.NameAndInfoRequests(_volume)) })
            {
                await client.SendOptionAsync(option, data);
                var reply = await client.ReadOptionReplyAsync();
                Assert.Equal((option, 0x80000005u), (reply.Option, reply.Type)); // NBD_REP_ERR_TLS_REQD
            }
            await client.SendOptionAsync(5, [1]); // STARTTLS carries no data
            Assert.Equal(0x80000003u, (await client.ReadOptionReplyAsync()).Type); // NBD_REP_ERR_INVALID
            await client.SendOptionAsync(1, System.Text.Encoding.UTF8.GetBytes(_volume)); // EXPORT_NAME cannot be refused: the server closes
            Assert.True(await client.IsClosedByServerAsync());
        }
        Assert.True(_server.RequestsRejected >= 5);
    }

    private async Task<string> RunAsync(string program, params string[] arguments)
    {
        fixture.SkipIfUnavailable();
        return (await ExternalProgram.RunAsync(program, arguments)).All;
    }
}
