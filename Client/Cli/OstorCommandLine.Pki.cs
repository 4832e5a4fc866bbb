using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using OrleansStorage.Errors;
using OrleansStorage.Security;

namespace OrleansStorage.Client.Cli;

/// <summary><c>ostor pki</c>: the cluster's certificate authority and the certificates it issues.</summary>
public static partial class OstorCommandLine
{
    private static Command PkiCommands()
    {
        var pki = new Command("pki", "The cluster's certificates: an authority, a certificate per host and per client (folder: --pki or $OSTOR_PKI)");

        var clusterName = new Option<string>("--cluster") { Description = "Name in the authority's certificate", DefaultValueFactory = _ => "ostor" };
        var init = new Command("init", "Create the cluster's authority and the hosts' ticket key (once; the authority's key issues every other certificate). In a folder that has an authority but no ticket key, creates only the key") { clusterName };
        init.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            if (folder.HasAuthority && !folder.HasTicketKey)
            {
                folder.CreateTicketKey();
                Console.WriteLine($"created the hosts' ticket key {folder.TicketKeyPath} (mode 0600; copy it to every host)");
                return;
            }
            using var authority = folder.CreateAuthority(parse.GetValue(clusterName)!, DateTimeOffset.UtcNow);
            folder.CreateTicketKey();
            if (!folder.HasWebPassword)
            {
                folder.CreateWebPassword();
            }
            Console.WriteLine($"created the authority of cluster '{parse.GetValue(clusterName)}' in {folder.AuthorityCertificatePath} (key {folder.AuthorityKeyPath}, mode 0600), valid until {authority.NotAfter:yyyy-MM-dd}, the hosts' ticket key {folder.TicketKeyPath} and the HTTP endpoints' password {folder.WebPasswordPath}");
        });
        pki.Add(init);

        var webPassword = new Command("web-password", "Create the password of the hosts' and NBD servers' HTTP endpoints (dashboard, /metrics) unless the folder has one; copy it to every host");
        webPassword.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            if (folder.HasWebPassword)
            {
                Console.WriteLine($"{folder.WebPasswordPath} exists (HTTP Basic authentication, any user name)");
                return;
            }
            folder.CreateWebPassword();
            Console.WriteLine($"created {folder.WebPasswordPath} (mode 0600): the HTTP endpoints take it with HTTP Basic authentication, under any user name");
        });
        pki.Add(webPassword);

        var hostName = new Argument<string>("HOST") { Description = "Host id, e.g. host-4" };
        var addresses = new Option<string[]>("--address") { Description = "An address the host is reached at (repeat for several)", Required = true, AllowMultipleArgumentsPerToken = true };
        var issueHost = new Command("issue-host", "Issue (or reissue, replacing) a host's certificate; copy ca.crt, tickets.key and hosts/HOST.* to that host") { hostName, addresses };
        issueHost.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            var ips = ParseAddresses(parse.GetValue(addresses)!);
            using var issued = folder.IssueHost(parse.GetValue(hostName)!, ips, DateTimeOffset.UtcNow);
            Console.WriteLine($"issued {folder.CertificatePath(CertificateRole.Host, parse.GetValue(hostName)!)} for {string.Join(", ", ips.Select(i => i.ToString()))}, valid until {issued.NotAfter:yyyy-MM-dd}");
        });
        pki.Add(issueHost);

        var clientName = new Argument<string>("NAME") { Description = "Client name, e.g. backup" };
        var issueClient = new Command("issue-client", "Issue (or reissue, replacing) a client's certificate; copy ca.crt and clients/NAME.* to the client") { clientName };
        issueClient.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            using var issued = folder.IssueClient(parse.GetValue(clientName)!, DateTimeOffset.UtcNow);
            Console.WriteLine($"issued {folder.CertificatePath(CertificateRole.Client, parse.GetValue(clientName)!)}, valid until {issued.NotAfter:yyyy-MM-dd}");
        });
        pki.Add(issueClient);

        var serverName = new Argument<string>("NAME") { Description = "Server name, e.g. nbd" };
        var serverAddresses = new Option<string[]>("--address") { Description = "An address clients reach the server at (repeat for several)", DefaultValueFactory = _ => ["127.0.0.1"], AllowMultipleArgumentsPerToken = true };
        var dnsNames = new Option<string[]>("--dns") { Description = "A DNS name clients reach the server at (repeat for several)", DefaultValueFactory = _ => ["localhost"], AllowMultipleArgumentsPerToken = true };
        var issueServer = new Command("issue-server", "Issue (or reissue) a TLS server certificate for an NBD export ('ostor nbd serve --tls-certificate NAME')") { serverName, serverAddresses, dnsNames };
        issueServer.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            var ips = ParseAddresses(parse.GetValue(serverAddresses)!);
            using var issued = folder.IssueServer(parse.GetValue(serverName)!, ips, parse.GetValue(dnsNames)!, DateTimeOffset.UtcNow);
            Console.WriteLine($"issued {folder.CertificatePath(CertificateRole.Server, parse.GetValue(serverName)!)} for {string.Join(", ", [.. ips.Select(i => i.ToString()), .. parse.GetValue(dnsNames)!])}, valid until {issued.NotAfter:yyyy-MM-dd}");
        });
        pki.Add(issueServer);

        var dirClient = new Argument<string>("NAME") { Description = "Client name" };
        var dirPath = new Argument<string>("DIR") { Description = "Folder to write (made 0700)" };
        var clientDir = new Command("client-dir", "Write a client's certificate, key and the authority as qemu (tls-creds-x509 dir=) and libnbd (tls-certificates=) read them") { dirClient, dirPath };
        clientDir.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            folder.ExportForNbdClient(parse.GetValue(dirClient)!, parse.GetValue(dirPath)!);
            Console.WriteLine($"wrote ca-cert.pem, client-cert.pem and client-key.pem of '{parse.GetValue(dirClient)}' to {Path.GetFullPath(parse.GetValue(dirPath)!)}");
        });
        pki.Add(clientDir);

        var pskUser = new Argument<string>("NAME") { Description = "Client name (the TLS-PSK username)" };
        var pskFile = new Option<string>("--file") { Description = "The keys file ('username:hexkey' lines, mode 0600), for 'ostor nbd serve --tls-psk FILE'", Required = true };
        var psk = new Command("psk", "Add (or replace) a client's pre-shared key for NBD over TLS-PSK; give the client its line (qemu: DIR/keys.psk with tls-creds-psk,username=NAME)") { pskUser, pskFile };
        psk.SetAction(parse =>
        {
            Client.Nbd.NbdPskKeys.Issue(parse.GetValue(pskFile)!, parse.GetValue(pskUser)!);
            Console.WriteLine($"wrote a 32-byte key for '{parse.GetValue(pskUser)}' to {Path.GetFullPath(parse.GetValue(pskFile)!)}");
        });
        pki.Add(psk);

        var list = new Command("list", "List the certificates in the folder, with their role and expiry");
        list.SetAction(parse =>
        {
            var folder = RequiredPkiDirectory(parse);
            var trust = folder.LoadTrust();
            var rows = new List<string[]> { Row(trust.Authority, "authority", null) };
            foreach (var role in Enum.GetValues<CertificateRole>())
            {
                var under = Path.GetDirectoryName(folder.CertificatePath(role, "x"))!;
                foreach (var file in Directory.Exists(under) ? Directory.GetFiles(under, "*.crt").Order(StringComparer.Ordinal).ToArray() : [])
                {
                    using var certificate = X509CertificateLoader.LoadCertificateFromFile(file);
                    rows.Add(Row(certificate, role.ToString().ToLowerInvariant(), trust.Refusal(certificate, role)));
                }
            }
            PrintTable(["NAME", "ROLE", "EXPIRES", "STATE"], rows);
        });
        pki.Add(list);
        return pki;

        static string[] Row(X509Certificate2 certificate, string role, string? refusal) =>
        [
            ClusterCertificates.NameOf(certificate),
            role,
            certificate.NotAfter.ToUniversalTime().ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
            refusal ?? "valid",
        ];
    }

    private static IPAddress[] ParseAddresses(string[] addresses) =>
        [.. addresses.Select(a => IPAddress.TryParse(a, out var ip) ? ip : throw new InvalidRequestException($"--address '{a}' is not an IP address"))];

    private static string? PkiDirectoryOf(ParseResult parse) => parse.GetValue(Pki) ?? NonEmpty(Environment.GetEnvironmentVariable(PkiEnvironmentVariable));

    private static PkiDirectory RequiredPkiDirectory(ParseResult parse) =>
        new(PkiDirectoryOf(parse) ?? throw new InvalidRequestException($"give the certificates folder with --pki DIR or ${PkiEnvironmentVariable}"));

    private static string? NonEmpty(string? text) => string.IsNullOrWhiteSpace(text) ? null : text;
}
