using System.ComponentModel.DataAnnotations;
using OrleansStorage.Management;

namespace OrleansStorage.Leases;

/// <summary>
/// Primary leases (docs/failures.md, "Read leases"). Bound from configuration section "Leases";
/// every host of a cluster must use the same values.
/// </summary>
public sealed class LeaseOptions
{
    public const string SectionName = "Leases";

    /// <summary>
    /// How long a primary may serve after it asked for its lease. A primary cut off from the
    /// management service serves at most this long; a group whose primary changed while the old
    /// one was alive but unreachable waits at most this long (scaled by the drift bound) before
    /// its new primary serves.
    /// </summary>
    public TimeSpan Duration { get; set; } = TimeSpan.FromSeconds(8);

    /// <summary>How often a storage server renews its lease; well under <see cref="Duration"/>, so a slow renewal or two costs nothing.</summary>
    public TimeSpan RenewInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The largest rate at which two hosts' monotonic clocks may drift apart (0.01: 10 ms per
    /// second). Every wait that one host computes for another is stretched by (1+d)/(1-d).
    /// </summary>
    [Range(0.0, 0.2)]
    public double ClockDriftBound { get; set; } = 0.01;

    /// <summary>Stretches a duration measured on one host's clock so that it covers the same span on any other's.</summary>
    public TimeSpan Stretch(TimeSpan span) => span * ((1 + ClockDriftBound) / (1 - ClockDriftBound));

    public string? Problem() =>
        Duration <= TimeSpan.Zero ? $"Leases:Duration is {Duration}; it must be positive"
        : RenewInterval <= TimeSpan.Zero || RenewInterval * 2 > Duration ? $"Leases:RenewInterval is {RenewInterval}; it must be positive and at most half of Leases:Duration ({Duration})"
        : Stretch(Duration) >= ManagementGrain.WriterHoldLimit ? $"Leases:Duration is {Duration} ({Stretch(Duration)} stretched by Leases:ClockDriftBound {ClockDriftBound}); it must stay below the {ManagementGrain.WriterHoldLimit} a snapshot holds its volume's writers, or they could go on while a primary still serves the map before the snapshot"
        : null;
}
