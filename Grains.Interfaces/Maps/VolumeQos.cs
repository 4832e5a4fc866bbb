using System.Globalization;
using OrleansStorage.Errors;

namespace OrleansStorage.Maps;

/// <summary>
/// A volume's quality-of-service limits, for all its clients together: operations and bytes
/// per second, reads and writes apart (0: no limit). Each host's storage server enforces the
/// part of them that matches the share of the volume's placement groups it leads, so the sum
/// over the hosts is the volume's limit; a second's worth may come in one burst. Part of the map:
/// changing it is an epoch like any other.
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.VolumeQos")]
public sealed record VolumeQos(
    [property: Id(0)] long ReadIops,
    [property: Id(1)] long WriteIops,
    [property: Id(2)] long ReadBytesPerSecond,
    [property: Id(3)] long WriteBytesPerSecond)
{
    /// <summary>The smallest byte rate that can be set: one 4 KiB block per second.</summary>
    public const long MinimumBytesPerSecond = 4096;

    /// <summary>Above this an operation limit means nothing on any disk we run on.</summary>
    public const long MaximumIops = 10_000_000;

    public static VolumeQos Unlimited { get; } = new(0, 0, 0, 0);

    public bool IsUnlimited => ReadIops == 0 && WriteIops == 0 && ReadBytesPerSecond == 0 && WriteBytesPerSecond == 0;

    /// <summary>Null when the limits are acceptable; else what is wrong, for one line.</summary>
    public string? Problem()
    {
        foreach (var (name, iops) in new[] { ("read IOPS", ReadIops), ("write IOPS", WriteIops) })
        {
            if (iops is < 0 or > MaximumIops)
            {
                return string.Create(CultureInfo.InvariantCulture, $"{name} limit {iops} is outside 0 (none) to {MaximumIops}");
            }
        }
        foreach (var (name, bps) in new[] { ("read bytes/s", ReadBytesPerSecond), ("write bytes/s", WriteBytesPerSecond) })
        {
            if (bps < 0 || (bps > 0 && bps < MinimumBytesPerSecond))
            {
                return string.Create(CultureInfo.InvariantCulture, $"{name} limit {bps} is below {MinimumBytesPerSecond} (0 means none)");
            }
        }
        return null;
    }

    public VolumeQos Checked() => Problem() is { } problem ? throw new InvalidRequestException($"QoS: {problem}") : this;

    public override string ToString() => IsUnlimited ? "-" : string.Join(' ', new[]
    {
        ReadIops > 0 ? string.Create(CultureInfo.InvariantCulture, $"r{ReadIops}op/s") : null,
        WriteIops > 0 ? string.Create(CultureInfo.InvariantCulture, $"w{WriteIops}op/s") : null,
        ReadBytesPerSecond > 0 ? "r" + Rate(ReadBytesPerSecond) : null,
        WriteBytesPerSecond > 0 ? "w" + Rate(WriteBytesPerSecond) : null,
    }.Where(part => part is not null));

    /// <summary>Exact, in the largest unit that divides it: 64KiB/s, 50MiB/s, 5000B/s.</summary>
    private static string Rate(long bytesPerSecond) => bytesPerSecond switch
    {
        _ when bytesPerSecond % (1 << 20) == 0 => string.Create(CultureInfo.InvariantCulture, $"{bytesPerSecond >> 20}MiB/s"),
        _ when bytesPerSecond % 1024 == 0 => string.Create(CultureInfo.InvariantCulture, $"{bytesPerSecond >> 10}KiB/s"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytesPerSecond}B/s"),
    };
}
