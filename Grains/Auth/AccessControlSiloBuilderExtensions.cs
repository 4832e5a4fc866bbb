using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace OrleansStorage.Auth;

public static class AccessControlSiloBuilderExtensions
{
    /// <summary>
    /// Turns client capabilities on for this silo: every incoming grain call must carry a ticket
    /// sealed with <paramref name="ticketKey"/> that allows it, and every call this silo makes
    /// carries its own host ticket. Every silo of a cluster must do the same, or none.
    /// </summary>
    public static ISiloBuilder AddAccessControl(this ISiloBuilder silo, byte[] ticketKey, X509Certificate2 authority, string hostId)
    {
        silo.Services.AddSingleton(sp => new AccessControl(
            new TicketKey(ticketKey), authority, hostId, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<AccessControl>>()));
        silo.Services.AddHostedService<TicketRevocationFollower>();
        silo.AddIncomingGrainCallFilter<AccessFilter>();
        silo.AddOutgoingGrainCallFilter<HostTicketFilter>();
        return silo;
    }
}
