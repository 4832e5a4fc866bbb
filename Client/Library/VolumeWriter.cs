using OrleansStorage.Management;

namespace OrleansStorage.Client.Library;

/// <summary>
/// Tells the management service that a holder (an NBD connection, a program) has a volume open
/// for writing, renewed until disposed, so that a rollback can refuse to pull the volume from
/// under it. Best effort: a failed renewal is tried again at the next one, and a holder that
/// dies is forgotten when its renewals stop.
/// </summary>
public sealed class VolumeWriter : IAsyncDisposable
{
    private readonly OstorClient _client;
    private readonly string _volume;
    private readonly string _holder;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _renewals;

    internal VolumeWriter(OstorClient client, string volume, string holder)
    {
        _client = client;
        _volume = volume;
        _holder = holder;
        _renewals = RenewAsync();
    }

    private async Task RenewAsync()
    {
        using var timer = new PeriodicTimer(VolumeWriters.RenewInterval);
        do
        {
            try
            {
                await _client.HoldWriterAsync(_volume, _holder, open: true);
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
            await _client.HoldWriterAsync(_volume, _holder, open: false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Forgotten anyway once its renewals stop.
        }
        _stop.Dispose();
    }
}
