using OrleansStorage.Management;

namespace OrleansStorage.Client.Library;

/// <summary>
/// A registration with the management service that a volume is being written, renewed every
/// <see cref="VolumeWriters.RenewInterval"/> until disposed, then taken back: an NBD connection
/// holding a volume open for writing (a rollback refuses to pull the volume from under it), or
/// this client writing a volume (it is paused around the volume's snapshots). Best effort: a
/// failed renewal is tried again at the next one, and a writer that dies is forgotten when its
/// renewals stop.
/// </summary>
public sealed class VolumeWriter : IAsyncDisposable
{
    private readonly Func<bool, Task> _register;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _renewals;

    /// <param name="register">Registers (true) or takes the registration back (false).</param>
    internal VolumeWriter(Func<bool, Task> register)
    {
        _register = register;
        _renewals = RenewAsync();
    }

    private async Task RenewAsync()
    {
        using var timer = new PeriodicTimer(VolumeWriters.RenewInterval);
        do
        {
            try
            {
                await _register(true);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // The management service may be failing over: the next renewal tries again.
            }
        }
        while (await WaitAsync(timer));
    }

    private async Task<bool> WaitAsync(PeriodicTimer timer)
    {
        try
        {
            return await timer.WaitForNextTickAsync(_stop.Token);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _renewals;
        try
        {
            // Bounded: a client closing while the cluster is away does not wait for it.
            await _register(false).WaitAsync(TimeSpan.FromSeconds(2));
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Forgotten anyway once its renewals stop.
        }
        _stop.Dispose();
    }
}
