using OrleansStorage.Telemetry;
using static OrleansStorage.Client.Nbd.NbdProtocol;

namespace OrleansStorage.Client.Nbd;

/// <summary>The in-flight budget of one connection, and the labels its metrics carry.</summary>
internal sealed partial class NbdConnection
{
    private async Task AcquireBudgetAsync(long cost, CancellationToken cancellationToken)
    {
        // One request is always admitted, however large, so a request never waits for itself.
        while (Interlocked.Read(ref _inFlightCost) > 0 && Interlocked.Read(ref _inFlightCost) + cost > _options.MaxInFlightBytesPerConnection)
        {
            await _budgetFreed.WaitAsync(cancellationToken);
        }
        Interlocked.Add(ref _inFlightCost, cost);
        try
        {
            // Then the server's share: whatever every connection does, the server holds at most its budget.
            await _server.Memory.AcquireAsync(cost, cancellationToken);
        }
        catch
        {
            Interlocked.Add(ref _inFlightCost, -cost);
            throw;
        }
    }

    private void ReleaseBudget(long cost)
    {
        _server.Memory.Release(cost);
        Interlocked.Add(ref _inFlightCost, -cost);
        if (_budgetFreed.CurrentCount == 0)
        {
            _budgetFreed.Release();
        }
    }

    private async Task WaitForInFlightAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (Interlocked.Read(ref _inFlightCost) > 0 && DateTime.UtcNow < deadline)
        {
            await _budgetFreed.WaitAsync(TimeSpan.FromMilliseconds(100));
        }
    }

    /// <summary>A command as a metric label: one of a few known values, whatever number a client sends.</summary>
    private static string CommandLabel(ushort type) => type switch
    {
        CmdRead => "read",
        CmdWrite => "write",
        CmdFlush => "flush",
        CmdTrim => "trim",
        CmdWriteZeroes => "write_zeroes",
        CmdBlockStatus => "block_status",
        _ => "other",
    };

    private static string ErrorLabel(uint error) => error switch
    {
        0 => "",
        Eperm => "eperm",
        Eio => "eio",
        Enomem => "enomem",
        Einval => "einval",
        Enospc => "enospc",
        Eoverflow => "eoverflow",
        Eshutdown => "eshutdown",
        _ => "other",
    };

    private static string CommandName(ushort type) => type switch
    {
        CmdRead => "READ",
        CmdWrite => "WRITE",
        CmdFlush => "FLUSH",
        CmdTrim => "TRIM",
        CmdWriteZeroes => "WRITE_ZEROES",
        CmdBlockStatus => "BLOCK_STATUS",
        _ => $"command {type}",
    };
}
