using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Connections.Security;
using OrleansStorage.Logging;
using OrleansStorage.Security;

namespace OrleansStorage.Silo.Hosting;

/// <summary>
/// Mutual TLS on both of a silo's doors, with what each door takes: the silo port only host
/// certificates of this cluster (a client certificate must not make its holder a silo), the
/// gateway host or client certificates of this cluster. Anything else is refused at the
/// handshake, before a single Orleans message is read.
/// </summary>
internal static partial class SiloTls
{
    public static void Configure(ISiloBuilder silo, ClusterTrust trust, X509Certificate2 identity)
    {
        // One rate per door: a flood at the gateway must not hide a stranger at the silo port.
        var siloRefusals = LogRateLimiter.ForRefusals();
        var gatewayRefusals = LogRateLimiter.ForRefusals();
        silo.Configure<SiloConnectionOptions>(o =>
        {
            o.ConfigureSiloInboundConnection(b => b.UseServerTls(Options(b, "silo", trust, identity, siloRefusals, CertificateRole.Host)));
            o.ConfigureSiloOutboundConnection(b => b.UseClientTls(Options(b, "silo", trust, identity, siloRefusals, CertificateRole.Host)));
            o.ConfigureGatewayInboundConnection(b => b.UseServerTls(Options(b, "gateway", trust, identity, gatewayRefusals, CertificateRole.Host, CertificateRole.Client)));
        });
    }

    private static TlsOptions Options(IConnectionBuilder builder, string door, ClusterTrust trust, X509Certificate2 identity, LogRateLimiter refusals, params CertificateRole[] roles)
    {
        var logger = builder.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(SiloTls));
        return new TlsOptions
        {
            LocalCertificate = identity,
            RemoteCertificateMode = RemoteCertificateMode.RequireCertificate,
            ClientCertificateMode = RemoteCertificateMode.RequireCertificate,
            // The chain is judged against the cluster's authority alone, not the system's roots.
            RemoteCertificateValidation = (certificate, _, _) =>
            {
                if (trust.Refusal(certificate, roles) is not { } refusal)
                {
                    return true;
                }
                if (refusals.TryEnter(out var suppressed))
                {
                    Log.Refused(logger, door, refusal, suppressed);
                }
                return false;
            },
        };
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "refused a TLS connection on the {Door} port: {Refusal} ({Suppressed} more refusals not logged since the last)")]
        public static partial void Refused(ILogger logger, string door, string refusal, long suppressed);
    }
}
