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

    /// <summary>
    /// How long after its last read of the database a management activation may go on granting
    /// leases on its hosts' echoes alone (docs/failures.md, "Leases without the database"): how
    /// long block I/O outlasts a database outage. The price: a new activation that never hears
    /// from a majority of the hosts (half of them lost) waits this long before a group whose
    /// primary moved is served again, and before it changes the map's hosts. Zero turns granting
    /// on witnesses off: every renewal reads the database, as before it existed (set it on every
    /// host while a version without it still runs anywhere in the cluster).
    /// </summary>
    public TimeSpan WitnessedGrantLimit { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>
    /// How fresh a host's echo must be to count as a witness. Three renewals: the echo a host
    /// sends is of the answer before, so it is a renewal old when it arrives, and two renewals
    /// old just before the next one (more, as a host renews an interval after its last renewal
    /// ended); the third is the margin that keeps an activation witnessed while its hosts renew
    /// on time.
    /// </summary>
    public TimeSpan WitnessWindow => RenewInterval * 3;

    /// <summary>Whether an activation may grant on its witnesses at all (<see cref="WitnessedGrantLimit"/> zero turns it off).</summary>
    public bool GrantsOnWitnesses => WitnessedGrantLimit > TimeSpan.Zero;

    /// <summary>Stretches a duration measured on one host's clock so that it covers the same span on any other's.</summary>
    public TimeSpan Stretch(TimeSpan span) => span * ((1 + ClockDriftBound) / (1 - ClockDriftBound));

    public string? Problem() =>
        Duration <= TimeSpan.Zero ? $"Leases:Duration is {Duration}; it must be positive"
        : RenewInterval <= TimeSpan.Zero || RenewInterval * 2 > Duration ? $"Leases:RenewInterval is {RenewInterval}; it must be positive and at most half of Leases:Duration ({Duration})"
        : WitnessedGrantLimit < TimeSpan.Zero || (GrantsOnWitnesses && WitnessedGrantLimit < Duration) ? $"Leases:WitnessedGrantLimit is {WitnessedGrantLimit}; it must be zero (off) or at least Leases:Duration ({Duration})"
        : Stretch(WitnessWindow + Duration) >= ManagementGrain.WriterHoldLimit ? $"Leases:Duration ({Duration}) and three Leases:RenewInterval ({RenewInterval}), stretched by Leases:ClockDriftBound {ClockDriftBound}, come to {Stretch(WitnessWindow + Duration)}; they must stay below the {ManagementGrain.WriterHoldLimit} a snapshot holds its volume's writers, or they could go on while a primary still serves the map before the snapshot"
        : null;
}
