using Orleans.CodeGeneration;

namespace OrleansStorage.Management;

/// <summary>
/// A client sends each call of this method through the next of its gateways in turn (an
/// unordered request, in Orleans' routing), instead of through the one gateway its grain's id
/// first landed on. For what a client asks the cluster's single services before it can do
/// anything else, the map and its ticket: when its gateway cannot reach the service's activation,
/// or reaches one cut off from the database that refuses, its next try goes through another
/// gateway (issue 28, hole 7). On a method, not on the grain class: Orleans 10 reads the grain
/// type's "unordered" property nowhere on the way to the message.
/// </summary>
[InvokableCustomInitializer(nameof(IRequest.AddInvokeMethodOptions), InvokeMethodOptions.Unordered)]
[AttributeUsage(AttributeTargets.Method)]
public sealed class AnyGatewayAttribute : Attribute
{
}
