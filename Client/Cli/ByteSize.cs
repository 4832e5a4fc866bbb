using System.Globalization;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Cli;

/// <summary>Sizes as people type them: <c>4096</c>, <c>64KiB</c>, <c>256MiB</c>, <c>1GiB</c>, <c>2T</c> (binary units).</summary>
public static class ByteSize
{
    private static readonly (string Suffix, int Shift)[] Units =
    [
        ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10),
        ("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10),
        ("T", 40), ("G", 30), ("M", 20), ("K", 10),
        ("B", 0),
    ];

    public static long Parse(string text)
    {
        var trimmed = text.Trim();
        var shift = 0;
        foreach (var (suffix, unitShift) in Units)
        {
            if (trimmed.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                trimmed = trimmed[..^suffix.Length].TrimEnd();
                shift = unitShift;
                break;
            }
        }
        if (!long.TryParse(trimmed, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
        {
            throw new InvalidRequestException($"'{text}' is not a size (examples: 4096, 64KiB, 256MiB, 1GiB)");
        }
        if (value > long.MaxValue >> shift)
        {
            throw new InvalidRequestException($"size '{text}' is too large");
        }
        return value << shift;
    }

    public static string Format(long bytes)
    {
        string[] names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        var unit = 0;
        while (Math.Abs(value) >= 1024 && unit < names.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.0} {names[unit]}");
    }
}
