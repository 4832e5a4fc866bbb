using System.Reflection;
using OrleansStorage.Errors;

namespace OrleansStorage.Auth;

/// <summary>
/// Checks every grain call that reaches this silo, whoever sent it and through whichever door:
/// its ticket must be sealed by the cluster and unexpired, and its principal must hold what the
/// method requires. A volume named by argument is checked here; one named by id is checked by
/// the storage server against its map (<see cref="AccessControl.Demand"/>).
/// </summary>
internal sealed class AccessFilter(AccessControl access) : IIncomingGrainCallFilter
{
    // Async so that the caller set here stays with this call and its continuations.
    public async Task Invoke(IIncomingGrainCallContext context)
    {
        var rule = AccessRules.Of(context.InterfaceMethod);
        if (rule.Access == Access.Anyone)
        {
            AccessControl.Caller = null;
            await context.Invoke();
            return;
        }
        var principal = access.Tickets!.Open(RequestContext.Get(TicketGrant.RequestContextKey) as byte[], access.Now, out var problem);
        if (principal is null)
        {
            throw access.Refuse(new AccessDeniedException($"{problem}; {Describe(context.InterfaceMethod)} needs {Needs(rule.Access)} (connect with a client certificate of this cluster)"));
        }
        if (access.Revoked(principal) is { } revoked)
        {
            access.Refuse(new AccessDeniedException(revoked.Message)); // counted and logged as a refusal
            throw revoked;
        }
        if (Refusal(rule, principal, context) is { } refusal)
        {
            throw access.Refuse(principal.Denied(refusal));
        }
        AccessControl.Caller = principal;
        await context.Invoke();
    }

    private static string? Refusal(RequiresAttribute rule, Principal principal, IIncomingGrainCallContext context)
    {
        if (principal.IsHost || rule.Access == Access.Authenticated)
        {
            return null;
        }
        var method = Describe(context.InterfaceMethod);
        switch (rule.Access)
        {
            case Access.Host:
                return $"call {method} (hosts only)";
            case Access.ClusterAdmin:
                return principal.IsClusterAdmin ? null : $"call {method} (needs admin:*)";
        }
        var level = rule.Access switch
        {
            Access.Read => CapabilityLevel.Read,
            Access.Write => CapabilityLevel.Write,
            _ => CapabilityLevel.Admin,
        };
        if (rule.VolumeNameArgument < 0)
        {
            return principal.HoldsAny(level) ? null : $"call {method} (needs {Capability.LevelName(level)} on the volume)";
        }
        var volume = context.Request.GetArgument(rule.VolumeNameArgument) as string ?? "";
        if (volume.Length == 0)
        {
            // Bad input, not a refusal: no grant names the empty volume, and none should seem to.
            throw new InvalidRequestException("a volume name must not be empty");
        }
        if (!principal.Allows(level, volume))
        {
            return $"call {method} on volume '{volume}' (needs {Capability.LevelName(level)} on it)";
        }
        var source = rule.SourceVolumeArgument < 0 ? null : context.Request.GetArgument(rule.SourceVolumeArgument) as string ?? "";
        return source is null || principal.Allows(CapabilityLevel.Read, source) ? null : $"call {method} from volume '{source}' (needs {Capability.LevelName(CapabilityLevel.Read)} on it)";
    }

    private static string Describe(MethodInfo? method) =>
        method is null ? "this call" : $"{method.DeclaringType?.Name}.{method.Name.Replace("Async", "", StringComparison.Ordinal)}";

    private static string Needs(Access access) => access == Access.Host ? "a host's ticket" : "a ticket";
}

/// <summary>
/// Puts this host's ticket on every call it sends to a grain — replacing the ticket of whichever
/// client's request led to the call — and no ticket at all on a call to a client, so that no
/// ticket ever reaches another party.
/// </summary>
internal sealed class HostTicketFilter(AccessControl access) : IOutgoingGrainCallFilter
{
    // Async so that the change stays with this call and does not linger in the caller's context.
    public async Task Invoke(IOutgoingGrainCallContext context)
    {
        if (context.TargetId.IsClient())
        {
            RequestContext.Remove(TicketGrant.RequestContextKey);
        }
        else
        {
            RequestContext.Set(TicketGrant.RequestContextKey, access.HostTicket());
        }
        await context.Invoke();
    }
}
