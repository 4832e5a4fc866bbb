using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using OrleansStorage.Errors;

namespace OrleansStorage.Security;

/// <summary>
/// A folder of the cluster's certificates in PEM, the layout every part reads:
/// <c>ca.crt</c> and <c>ca.key</c> (the authority; the key stays where certificates are issued),
/// <c>hosts/NAME.crt|key</c>, <c>clients/NAME.crt|key</c> and <c>servers/NAME.crt|key</c> (NBD
/// exports), and <c>tickets.key</c> (the secret the hosts seal client tickets with). A host needs
/// <c>ca.crt</c>, its own pair and <c>tickets.key</c>; a client or server <c>ca.crt</c> and its pair.
/// Keys are written 0600 in folders of mode 0700.
/// </summary>
public sealed partial class PkiDirectory(string path)
{
    private const UnixFileMode PrivateFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode PrivateFolder = PrivateFile | UnixFileMode.UserExecute;

    public string Path { get; } = System.IO.Path.GetFullPath(path);

    public string AuthorityCertificatePath => System.IO.Path.Combine(Path, "ca.crt");

    public string AuthorityKeyPath => System.IO.Path.Combine(Path, "ca.key");

    public bool HasAuthority => Present(AuthorityCertificatePath);

    public string TicketKeyPath => System.IO.Path.Combine(Path, "tickets.key");

    public bool HasTicketKey => Present(TicketKeyPath);

    /// <summary>The password of the hosts' and NBD servers' HTTP endpoints (dashboard, /metrics), see <see cref="WebCredentials"/>.</summary>
    public string WebPasswordPath => System.IO.Path.Combine(Path, "web.password");

    public bool HasWebPassword => Present(WebPasswordPath);

    public string CertificatePath(CertificateRole role, string name) => System.IO.Path.Combine(Path, Folder(role), CheckedName(name) + ".crt");

    public string KeyPath(CertificateRole role, string name) => System.IO.Path.Combine(Path, Folder(role), CheckedName(name) + ".key");

    public bool Has(CertificateRole role, string name) => Present(CertificatePath(role, name)) && Present(KeyPath(role, name));

    /// <summary>
    /// Whether the file is there. One this process may not read, or in a folder it may not enter,
    /// is not "missing": that is an error of its own, which says what to do (issue 29: "no cluster
    /// authority" was all another user got for a folder closed to it).
    /// </summary>
    private bool Present(string path)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read);
            return true;
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            throw new InvalidRequestException($"cannot read {path}: permission denied for user '{Environment.UserName}' (run as the user that owns {Path}, or give --pki or $OSTOR_PKI a folder this user may read)");
        }
    }

    /// <summary>Creates the authority; refuses to replace one, which would orphan every certificate it issued.</summary>
    public X509Certificate2 CreateAuthority(string clusterName, DateTimeOffset now)
    {
        if (HasAuthority)
        {
            throw new InvalidRequestException($"{AuthorityCertificatePath} exists; this folder already has a cluster authority");
        }
        var authority = ClusterCertificates.CreateAuthority(clusterName, now);
        Write(AuthorityCertificatePath, AuthorityKeyPath, authority);
        return authority;
    }

    /// <summary>
    /// Creates the hosts' ticket key: 32 random bytes every host seals and checks tickets with.
    /// Refuses to replace one (every ticket out there would fail until renewed).
    /// </summary>
    public void CreateTicketKey()
    {
        if (HasTicketKey)
        {
            throw new InvalidRequestException($"{TicketKeyPath} exists; this folder already has a ticket key");
        }
        CreatePrivateFolder(Path);
        WriteAtomically(TicketKeyPath, Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) + "\n", PrivateFile);
    }

    /// <summary>Creates the HTTP endpoints' password: 24 random characters, mode 0600. Refuses to replace one.</summary>
    public void CreateWebPassword()
    {
        if (HasWebPassword)
        {
            throw new InvalidRequestException($"{WebPasswordPath} exists; this folder already has the HTTP endpoints' password");
        }
        CreatePrivateFolder(Path);
        WriteAtomically(WebPasswordPath, Convert.ToBase64String(RandomNumberGenerator.GetBytes(18)).Replace('+', '-').Replace('/', '_') + "\n", PrivateFile);
    }

    public WebCredentials LoadWebPassword()
    {
        if (!HasWebPassword)
        {
            throw new InvalidRequestException($"no password for the HTTP endpoint at {WebPasswordPath}: create it with 'ostor pki web-password' (and copy it to every host), or turn the endpoint off with --http-port 0");
        }
        RefuseOpenKey(WebPasswordPath);
        var password = File.ReadAllText(WebPasswordPath).Trim();
        return password.Length >= 16
            ? new WebCredentials(password)
            : throw new InvalidRequestException($"{WebPasswordPath} holds a password of {password.Length} characters; it needs at least 16");
    }

    public byte[] LoadTicketKey()
    {
        if (!HasTicketKey)
        {
            throw new InvalidRequestException($"no ticket key at {TicketKeyPath}: every host needs the cluster's (copy it from where the authority is, or create it there with 'ostor pki init')");
        }
        RefuseOpenKey(TicketKeyPath);
        byte[] key;
        try
        {
            key = Convert.FromBase64String(File.ReadAllText(TicketKeyPath).Trim());
        }
        catch (FormatException)
        {
            throw new InvalidRequestException($"{TicketKeyPath} is not a ticket key (base64 of 32 bytes)");
        }
        return key.Length == 32 ? key : throw new InvalidRequestException($"{TicketKeyPath} holds {key.Length} bytes; a ticket key is 32");
    }

    /// <summary>Issues (or reissues, replacing the old pair) a host's certificate with the authority's key.</summary>
    public X509Certificate2 IssueHost(string hostId, IReadOnlyCollection<IPAddress> addresses, DateTimeOffset now)
    {
        using var authority = LoadAuthorityWithKey();
        var issued = ClusterCertificates.IssueHost(authority, CheckedName(hostId), addresses, now);
        Write(CertificatePath(CertificateRole.Host, hostId), KeyPath(CertificateRole.Host, hostId), issued);
        return issued;
    }

    /// <summary>Issues (or reissues) a client's certificate with the authority's key.</summary>
    public X509Certificate2 IssueClient(string clientName, DateTimeOffset now)
    {
        using var authority = LoadAuthorityWithKey();
        var issued = ClusterCertificates.IssueClient(authority, CheckedName(clientName), now);
        Write(CertificatePath(CertificateRole.Client, clientName), KeyPath(CertificateRole.Client, clientName), issued);
        return issued;
    }

    /// <summary>Issues (or reissues) a TLS server's certificate (an NBD export) with the authority's key.</summary>
    public X509Certificate2 IssueServer(string name, IReadOnlyCollection<IPAddress> addresses, IReadOnlyCollection<string> dnsNames, DateTimeOffset now)
    {
        using var authority = LoadAuthorityWithKey();
        var issued = ClusterCertificates.IssueServer(authority, CheckedName(name), addresses, dnsNames, now);
        Write(CertificatePath(CertificateRole.Server, name), KeyPath(CertificateRole.Server, name), issued);
        return issued;
    }

    /// <summary>
    /// A client's certificate, key and the authority under the file names qemu's
    /// <c>tls-creds-x509</c> and libnbd's <c>tls-certificates</c> read from a folder.
    /// </summary>
    public void ExportForNbdClient(string clientName, string folder)
    {
        using var identity = LoadIdentity(CertificateRole.Client, clientName);
        CreatePrivateFolder(folder);
        using var key = identity.GetECDsaPrivateKey()!;
        WriteAtomically(System.IO.Path.Combine(folder, "client-key.pem"), key.ExportPkcs8PrivateKeyPem(), PrivateFile);
        WriteAtomically(System.IO.Path.Combine(folder, "client-cert.pem"), identity.ExportCertificatePem(), PrivateFile | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        WriteAtomically(System.IO.Path.Combine(folder, "ca-cert.pem"), File.ReadAllText(AuthorityCertificatePath), PrivateFile | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    /// <summary>The trust of whoever holds this folder: the authority's certificate alone.</summary>
    public ClusterTrust LoadTrust()
    {
        if (!HasAuthority)
        {
            throw new InvalidRequestException($"no cluster authority at {AuthorityCertificatePath} (create one with 'ostor pki init')");
        }
        return new ClusterTrust(X509CertificateLoader.LoadCertificateFromFile(AuthorityCertificatePath));
    }

    /// <summary>A host's or client's certificate with its private key, checked against the authority.</summary>
    public X509Certificate2 LoadIdentity(CertificateRole role, string name)
    {
        var certificatePath = CertificatePath(role, name);
        var keyPath = KeyPath(role, name);
        if (!Present(certificatePath) || !Present(keyPath))
        {
            throw new InvalidRequestException($"no {role.ToString().ToLowerInvariant()} certificate for '{name}' in {Path} (expected {certificatePath} and {keyPath}; issue one with 'ostor pki issue-{role.ToString().ToLowerInvariant()}')");
        }
        RefuseOpenKey(keyPath);
        var identity = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        if (LoadTrust().Refusal(identity, role) is { } refusal)
        {
            identity.Dispose();
            throw new InvalidRequestException($"{certificatePath}: {refusal}");
        }
        return identity;
    }

    /// <summary>Host and client names: what a file name and a certificate's common name can both hold.</summary>
    public static string CheckedName(string name) =>
        NamePattern().IsMatch(name) ? name : throw new InvalidRequestException($"'{name}' is not a valid host or client name (1-63 of a-z, A-Z, 0-9, '.', '_', '-', starting with a letter or digit)");

    private X509Certificate2 LoadAuthorityWithKey()
    {
        if (!Present(AuthorityKeyPath))
        {
            throw new InvalidRequestException($"no authority key at {AuthorityKeyPath}: certificates are issued where the authority's key is (create one with 'ostor pki init')");
        }
        RefuseOpenKey(AuthorityKeyPath);
        return X509Certificate2.CreateFromPemFile(AuthorityCertificatePath, AuthorityKeyPath);
    }

    /// <summary>A key others can read is a key others may have: say so rather than use it (as ssh does).</summary>
    public static void RefuseOpenKey(string keyPath)
    {
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(keyPath) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            throw new InvalidRequestException($"{keyPath} is readable by others (mode {Convert.ToString((int)File.GetUnixFileMode(keyPath), 8)}); chmod 600 it");
        }
    }

    private static void Write(string certificatePath, string keyPath, X509Certificate2 certificate)
    {
        CreatePrivateFolder(System.IO.Path.GetDirectoryName(certificatePath)!);
        using var key = certificate.GetECDsaPrivateKey() ?? throw new InvalidOperationException("issued certificates carry an ECDSA key");
        // The key first and private from its first byte; the certificate replaces the old one last.
        WriteAtomically(keyPath, key.ExportPkcs8PrivateKeyPem(), PrivateFile);
        WriteAtomically(certificatePath, certificate.ExportCertificatePem(), PrivateFile | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    private static void CreatePrivateFolder(string folder)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(folder);
        }
        else
        {
            Directory.CreateDirectory(folder, PrivateFolder);
        }
    }

    /// <summary>A secret (a key, a keys file) written whole or not at all, readable by its owner only.</summary>
    public static void WritePrivateFile(string path, string text) => WriteAtomically(path, text, PrivateFile);

    private static void WriteAtomically(string path, string text, UnixFileMode mode)
    {
        var temporary = path + ".tmp";
        File.Delete(temporary); // a leftover would keep its old mode
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = mode;
        }
        using (var file = new FileStream(temporary, options))
        using (var writer = new StreamWriter(file))
        {
            writer.Write(text);
            writer.Flush();
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
    }

    private static string Folder(CertificateRole role) => role switch
    {
        CertificateRole.Host => "hosts",
        CertificateRole.Client => "clients",
        _ => "servers",
    };

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    private static partial Regex NamePattern();
}
