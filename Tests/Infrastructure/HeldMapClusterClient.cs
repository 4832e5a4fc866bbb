using System.Reflection;
using OrleansStorage.Management;
using OrleansStorage.Maps;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A cluster client whose management service answers every map request with one map held at an
/// old epoch, as an activation cut off from the database did through the gateway that still
/// reached it (issue 28, hole 7). Every other call goes to the cluster as it is.
/// </summary>
public class HeldMapClusterClient : DispatchProxy
{
    private IClusterClient _inner = null!;
    private ClusterMap _held = null!;

    /// <summary>How many map requests were answered with the held map.</summary>
    public int HeldAnswers => Volatile.Read(ref _heldAnswers);

    private int _heldAnswers;

    public static (IClusterClient Client, HeldMapClusterClient Seam) Create(IClusterClient inner, ClusterMap held)
    {
        var client = Create<IClusterClient, HeldMapClusterClient>();
        var seam = (HeldMapClusterClient)(object)client;
        seam._inner = inner;
        seam._held = held;
        return (client, seam);
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        var result = targetMethod!.Invoke(_inner, args);
        if (result is IManagementServiceGrain management)
        {
            return HeldMapManagement.Create(management, this);
        }
        return result;
    }

    private Task<ClusterMap> HeldMap()
    {
        Interlocked.Increment(ref _heldAnswers);
        return Task.FromResult(_held);
    }

    /// <summary>The management service with its map answers held.</summary>
    public class HeldMapManagement : DispatchProxy
    {
        private IManagementServiceGrain _inner = null!;
        private HeldMapClusterClient _owner = null!;

        public static IManagementServiceGrain Create(IManagementServiceGrain inner, HeldMapClusterClient owner)
        {
            var proxy = Create<IManagementServiceGrain, HeldMapManagement>();
            var seam = (HeldMapManagement)(object)proxy;
            seam._inner = inner;
            seam._owner = owner;
            return proxy;
        }

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args) =>
            targetMethod!.Name == nameof(IManagementServiceGrain.GetMapAsync)
                ? _owner.HeldMap()
                : targetMethod.Invoke(_inner, args);
    }
}
