using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace OrleansStorage.Auth;

/// <summary>
/// Keeps this silo's <see cref="AccessControl.Revocations"/> current: asks the auth service every
/// <see cref="Interval"/> which clients' grants changed, so that a ticket issued before the change
/// is refused on every grain call and data request within seconds, not when it expires (issue 29,
/// item 2). Asking cannot be lost as a push can; a failed ask keeps what was known (the tickets it
/// would refuse expire within <see cref="TicketGrant.Lifetime"/> anyway).
/// </summary>
internal sealed partial class TicketRevocationFollower(AccessControl access, IGrainFactory grains, TimeProvider clock, ILogger<TicketRevocationFollower> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    private readonly OrleansStorage.Logging.LogRateLimiter _failureLog = new(TimeSpan.FromSeconds(60));

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, clock);
        while (true)
        {
            try
            {
                await timer.WaitForNextTickAsync(stoppingToken);
            }
            catch (OperationCanceledException)
            {
                return; // the silo is stopping
            }
            try
            {
                access.Revocations = await grains.GetGrain<IAuthServiceGrain>(IAuthServiceGrain.DefaultKey).GetRevocationsAsync();
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
            {
                // The silo is starting or stopping, or the auth service is moving.
                if (_failureLog.TryEnter(out var suppressed))
                {
                    Log.AskFailed(logger, ex.Message, suppressed);
                }
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "asking the auth service for revoked tickets failed: {Message}; the last answer stands ({Suppressed} more failures not logged since the last)")]
        public static partial void AskFailed(ILogger logger, string message, long suppressed);
    }
}
