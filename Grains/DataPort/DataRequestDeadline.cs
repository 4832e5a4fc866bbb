using System.Diagnostics;
using OrleansStorage.Errors;

namespace OrleansStorage.DataPort;

/// <summary>
/// When the sender of the data request running now stops waiting for it (the request's timeout,
/// counted from its arrival here). A write that got its turn only after that is not applied: the
/// sender has given it up and may already have sent it again, or sent a later write over the same
/// bytes, which this one must not land after. Grain calls carry none (Orleans drops their expired
/// requests itself).
/// </summary>
internal static class DataRequestDeadline
{
    private static readonly AsyncLocal<long> Current = new();

    public static void Set(uint timeoutMs) =>
        Current.Value = timeoutMs == 0 ? 0 : Stopwatch.GetTimestamp() + (long)(timeoutMs * (Stopwatch.Frequency / 1000.0));

    public static void ThrowIfPassed(string hostId)
    {
        var deadline = Current.Value;
        if (deadline != 0 && Stopwatch.GetTimestamp() > deadline)
        {
            throw new HostUnavailableException(hostId, "a data request waited here past its sender's timeout and was dropped unapplied");
        }
    }
}
