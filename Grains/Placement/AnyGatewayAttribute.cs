using Orleans.Metadata;

namespace OrleansStorage.Placement;

/// <summary>
/// A client's calls to this grain go out through its gateways in turn, one call to the next
/// gateway, instead of always through the one gateway its id first landed on (Orleans' routing of
/// an unordered grain type; nothing changes on the silos). For the cluster's single services, the
/// management service and the auth service: a client whose gateway cannot reach the service's
/// activation, or reaches one cut off from the database that refuses, gets its next try through
/// another gateway (issue 28, hole 7). Calls from one client are still awaited one by one, so
/// their order holds where it matters.
/// </summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class AnyGatewayAttribute : Attribute, IGrainPropertiesProviderAttribute
{
    public void Populate(IServiceProvider services, Type grainClass, GrainType grainType, Dictionary<string, string> properties) =>
        properties[WellKnownGrainTypeProperties.Unordered] = "true";
}
