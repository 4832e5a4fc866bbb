using System.CommandLine;
using System.Net;
using Microsoft.Extensions.Logging;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Cli;

/// <summary><c>ostor nbd</c>: serving volumes to NBD clients, and the checks of its options.</summary>
public static partial class OstorCommandLine
{
    private static Command NbdCommands()
    {
        var nbd = new Command("nbd", "Export volumes as network block devices");
        var listen = new Option<string>("--listen") { Description = "Address and port to listen on", DefaultValueFactory = _ => "127.0.0.1:10809" };
        var exports = new Option<string[]>("--export") { Description = "Export only these volumes (repeatable); default: every volume", AllowMultipleArgumentsPerToken = true };
        var tls = new Option<string?>("--tls") { Description = "require (TLS-only exports), allow or off; default require with the cluster's certificates (--pki), else off" };
        var tlsCertificate = new Option<string>("--tls-certificate") { Description = "The server certificate in the certificates folder (ostor pki issue-server NAME)", DefaultValueFactory = _ => "nbd" };
        var insecure = new Option<bool>("--insecure") { Description = "Serve plain text on a non-loopback address: every volume open to that network (warned at every start)" };
        var defaults = new NbdServerOptions();
        var maxConnections = new Option<int>("--max-connections") { Description = "Sessions (connections past their handshake) at once; one more is closed when its handshake ends", DefaultValueFactory = _ => defaults.MaxConnections };
        var maxPerAddress = new Option<int>("--max-connections-per-address") { Description = "Sessions at once from one client address", DefaultValueFactory = _ => defaults.MaxConnectionsPerAddress };
        var memoryBudget = new Option<string>("--memory-budget") { Description = "Payload memory of the whole server, over all connections", DefaultValueFactory = _ => $"{defaults.MemoryBudgetBytes >> 20}MiB" };
        var handshakeTimeout = new Option<double>("--handshake-timeout") { Description = "Seconds from connecting to choosing an export (TLS included)", DefaultValueFactory = _ => defaults.HandshakeTimeout.TotalSeconds };
        var payloadTimeout = new Option<double>("--payload-timeout") { Description = "Seconds a write's payload may take to arrive, and a reply to be taken", DefaultValueFactory = _ => defaults.PayloadTimeout.TotalSeconds };
        var idleTimeout = new Option<double>("--idle-timeout") { Description = "Seconds a connection may send no request; 0 (the default): never, as a VM's idle disk must stay attached", DefaultValueFactory = _ => 0 };
        var tlsPsk = new Option<string?>("--tls-psk") { Description = "TLS with pre-shared keys from FILE (username:hexkey per line, as 'ostor pki psk' and psktool write and qemu's tls-creds-psk reads) instead of certificates; a username is a client name" };
        var metrics = new Option<string?>("--metrics") { Description = "Serve Prometheus metrics at http://ADDRESS:PORT/metrics (per export: commands, bytes, latency, errors; connections); a loopback address unless --insecure" };
        var otlpEndpoint = new Option<string?>("--otlp-endpoint") { Description = "Send a span per NBD command and per data request to this OTLP collector (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none: no tracing)" };
        var serve = new Command("serve", "Serve volumes over NBD until interrupted (qemu, nbd-client, nbdcopy, fio ...)")
        {
            listen, exports, tls, tlsCertificate, tlsPsk, insecure, maxConnections, maxPerAddress, memoryBudget, handshakeTimeout, payloadTimeout, idleTimeout, metrics, otlpEndpoint,
        };
        serve.SetAction(async (parse, ct) =>
        {
            // Every option is checked before the cluster is reached: a bad one is one line, whatever the cluster's state.
            var endpoint = ParseEndpoint(parse.GetValue(listen)!);
            var pkiPath = PkiDirectoryOf(parse);
            var pskFile = parse.GetValue(tlsPsk);
            var options = new NbdServerOptions
            {
                Listen = endpoint,
                Exports = parse.GetValue(exports) ?? [],
                Tls = parse.GetValue(tls) switch
                {
                    null => pkiPath is null && pskFile is null ? NbdTlsMode.Off : NbdTlsMode.Require,
                    "require" => NbdTlsMode.Require,
                    "allow" => NbdTlsMode.Allow,
                    "off" => NbdTlsMode.Off,
                    var other => throw new InvalidRequestException($"--tls '{other}' is not require, allow or off"),
                },
                MaxConnections = Positive(parse.GetValue(maxConnections), "--max-connections"),
                MaxConnectionsPerAddress = Positive(parse.GetValue(maxPerAddress), "--max-connections-per-address"),
                MemoryBudgetBytes = ByteSize.Parse(parse.GetValue(memoryBudget)!),
                HandshakeTimeout = Seconds(parse.GetValue(handshakeTimeout), "--handshake-timeout"),
                PayloadTimeout = Seconds(parse.GetValue(payloadTimeout), "--payload-timeout"),
                IdleTimeout = parse.GetValue(idleTimeout) == 0 ? null : Seconds(parse.GetValue(idleTimeout), "--idle-timeout"),
            };
            if (options.MemoryBudgetBytes < options.MaxInFlightBytesPerConnection)
            {
                throw new InvalidRequestException($"--memory-budget {ByteSize.Format(options.MemoryBudgetBytes)} is below one connection's {ByteSize.Format(options.MaxInFlightBytesPerConnection)}");
            }
            if (pskFile is not null)
            {
                options.TlsPsk = options.Tls != NbdTlsMode.Off ? NbdPskKeys.Load(pskFile) : throw new InvalidRequestException("--tls-psk with --tls off: give one or the other");
            }
            else if (options.Tls != NbdTlsMode.Off)
            {
                var pki = new Security.PkiDirectory(pkiPath ?? throw new InvalidRequestException($"--tls {parse.GetValue(tls)} needs the cluster's certificates (--pki or ${PkiEnvironmentVariable})"));
                options.TlsCertificate = pki.LoadIdentity(Security.CertificateRole.Server, parse.GetValue(tlsCertificate)!);
                options.TlsClientTrust = pki.LoadTrust();
            }
            var open = options.Tls != NbdTlsMode.Require;
            if (open && !IPAddress.IsLoopback(endpoint.Address) && !parse.GetValue(insecure))
            {
                throw new InvalidRequestException($"--listen {endpoint} is not a loopback address, and without --tls require every exported volume would be open to that network; use TLS, or give --insecure");
            }
            var telemetry = NbdTelemetry.FromOptions(parse.GetValue(metrics), parse.GetValue(otlpEndpoint),
                pkiPath is null ? null : new Security.PkiDirectory(pkiPath), parse.GetValue(insecure));
            return await WithClientAsync(parse, async client =>
            {
                await using var exporting = await telemetry.StartAsync();
                await ServeNbdAsync(client, options, ct);
            }, subscribe: true);
        });
        nbd.Add(serve);
        return nbd;
    }

    private static async Task ServeNbdAsync(OstorClient client, NbdServerOptions options, CancellationToken ct)
    {
        using var logging = LoggerFactory.Create(b => b
            .SetMinimumLevel(LogLevel.Information)
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            })
            // Orleans' own categories at Warning; a prefix filter "Orleans" would also silence ours ("OrleansStorage.Nbd").
            .AddFilter((category, level) => level >= (category?.StartsWith("OrleansStorage.", StringComparison.Ordinal) == true ? LogLevel.Information : LogLevel.Warning)));
        if (options.Tls != NbdTlsMode.Require)
        {
            Console.Error.WriteLine($"ostor: warning: plain-text NBD on {options.Listen}: whoever can connect there reads and writes the exported volumes without credentials");
        }
        await using var server = new NbdServer(client, options, logging.CreateLogger("OrleansStorage.Nbd"));
        server.Start();
        Console.Error.WriteLine(options.Tls == NbdTlsMode.Require && options.TlsPsk is not null
            ? $"ostor: serving NBD over TLS-PSK only on {server.LocalEndpoint} for {options.TlsPsk.Users.Count} user(s) (e.g. nbdinfo 'nbds://USER@{server.LocalEndpoint}/VOLUME?tls-psk-file=FILE'); Ctrl+C stops"
            : options.Tls == NbdTlsMode.Require
            ? $"ostor: serving NBD over TLS only on {server.LocalEndpoint} (e.g. nbdinfo 'nbds://{server.LocalEndpoint}/VOLUME?tls-certificates=DIR', DIR from 'ostor pki client-dir'); Ctrl+C stops"
            : $"ostor: serving NBD on {server.LocalEndpoint} (e.g. nbdinfo nbd://{server.LocalEndpoint}/VOLUME); Ctrl+C stops");
        try
        {
            await server.Completion.WaitAsync(ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Ctrl+C: disposing the server drains its connections.
        }
    }

    private static int Positive(int value, string option) =>
        value > 0 ? value : throw new InvalidRequestException($"{option} must be positive, got {value}");

    private static TimeSpan Seconds(double value, string option) =>
        value is > 0 and <= 86400 ? TimeSpan.FromSeconds(value) : throw new InvalidRequestException($"{option} must be between 0 and 86400 seconds, got {value}");

    private static IPEndPoint ParseEndpoint(string text)
    {
        if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port != 0)
        {
            return endpoint;
        }
        throw new InvalidRequestException($"--listen '{text}' is not address:port (e.g. 127.0.0.1:10809)");
    }
}
