using System.Net;
using System.Runtime.Versioning;
using OrleansStorage.Errors;
using OrleansStorage.Security;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>The cluster's authority and what <see cref="ClusterTrust"/> lets through each door.</summary>
[UnsupportedOSPlatform("windows")] // file modes are the point here
public sealed class ClusterPkiTests : IDisposable
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UtcNow;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-pki-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private PkiDirectory NewPki(string name, DateTimeOffset? createdAt = null)
    {
        var pki = new PkiDirectory(Path.Combine(_root, name));
        pki.CreateAuthority(name, createdAt ?? Now).Dispose();
        return pki;
    }

    [Fact]
    public void A_host_certificate_passes_both_doors_and_a_client_certificate_only_the_gateway()
    {
        var pki = NewPki("a");
        using var host = pki.IssueHost("host-1", [IPAddress.Loopback], Now);
        using var client = pki.IssueClient("backup", Now);
        var trust = pki.LoadTrust();

        Assert.Null(trust.Refusal(host, CertificateRole.Host));
        Assert.Null(trust.Refusal(host, CertificateRole.Host, CertificateRole.Client));
        Assert.Null(trust.Refusal(client, CertificateRole.Host, CertificateRole.Client));
        Assert.Contains("client certificate; this connection takes host certificates", trust.Refusal(client, CertificateRole.Host));
        Assert.Equal("backup", ClusterCertificates.NameOf(client));
        Assert.Equal(CertificateRole.Client, ClusterCertificates.RoleOf(client));
    }

    [Fact]
    public void Another_clusters_certificates_and_an_expired_one_are_refused()
    {
        var issuedLongAgo = Now - ClusterCertificates.IssuedLifetime - TimeSpan.FromDays(1);
        var ours = NewPki("ours", issuedLongAgo);
        var theirs = NewPki("theirs");
        using var stranger = theirs.IssueHost("host-1", [IPAddress.Loopback], Now);
        using var expired = ours.IssueClient("old", issuedLongAgo);
        var trust = ours.LoadTrust();

        Assert.Contains("is not one of this cluster's", trust.Refusal(stranger, CertificateRole.Host));
        Assert.Contains("is not one of this cluster's", trust.Refusal(expired, CertificateRole.Client));
        Assert.Equal("no certificate was presented", trust.Refusal(null, CertificateRole.Client));
        // The other authority's own certificate, presented as a host, is no better.
        Assert.NotNull(trust.Refusal(theirs.LoadTrust().Authority, CertificateRole.Host));
    }

    [Fact]
    public void Keys_are_private_an_open_key_is_refused_and_the_authority_is_never_replaced()
    {
        var pki = NewPki("a");
        pki.IssueClient("admin", Now).Dispose();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(pki.AuthorityKeyPath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(pki.KeyPath(CertificateRole.Client, "admin")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(pki.KeyPath(CertificateRole.Client, "admin"))!));
        using (var loaded = pki.LoadIdentity(CertificateRole.Client, "admin"))
        {
            Assert.True(loaded.HasPrivateKey);
        }

        File.SetUnixFileMode(pki.KeyPath(CertificateRole.Client, "admin"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        var open = Assert.Throws<InvalidRequestException>(() => pki.LoadIdentity(CertificateRole.Client, "admin"));
        Assert.Contains("readable by others", open.Message);

        var before = File.ReadAllBytes(pki.AuthorityCertificatePath);
        Assert.Throws<InvalidRequestException>(() => pki.CreateAuthority("again", Now));
        Assert.Equal(before, File.ReadAllBytes(pki.AuthorityCertificatePath));
    }

    [Fact]
    public void A_missing_certificate_or_a_bad_name_is_one_clear_line()
    {
        var pki = NewPki("a");
        Assert.Contains("no host certificate for 'host-7'", Assert.Throws<InvalidRequestException>(() => pki.LoadIdentity(CertificateRole.Host, "host-7")).Message);
        Assert.Contains("not a valid host or client name", Assert.Throws<InvalidRequestException>(() => pki.IssueClient("../evil", Now)).Message);
        Assert.Contains("no cluster authority", Assert.Throws<InvalidRequestException>(() => new PkiDirectory(Path.Combine(_root, "none")).LoadTrust()).Message);
        // A certificate issued for one role does not load as the other: a host key is not a client identity.
        pki.IssueHost("host-1", [IPAddress.Loopback], Now).Dispose();
        Directory.CreateDirectory(Path.GetDirectoryName(pki.CertificatePath(CertificateRole.Client, "host-1"))!);
        File.Copy(pki.CertificatePath(CertificateRole.Host, "host-1"), pki.CertificatePath(CertificateRole.Client, "host-1"));
        File.Copy(pki.KeyPath(CertificateRole.Host, "host-1"), pki.KeyPath(CertificateRole.Client, "host-1"));
        Assert.Contains("is a host certificate", Assert.Throws<InvalidRequestException>(() => pki.LoadIdentity(CertificateRole.Client, "host-1")).Message);
    }
}
