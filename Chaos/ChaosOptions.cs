using System.Globalization;
using OrleansStorage.Chaos.Faults;

namespace OrleansStorage.Chaos;

/// <summary>What <c>infra/chaos</c> passes: how long to run, the seed, and the cluster it brought up.</summary>
public sealed record ChaosOptions(TimeSpan RunLength, int Seed, int Hosts, bool Netns, string Root, string Data, int Clients, IReadOnlySet<FaultKind>? FaultKinds = null)
{
    public const string Usage = "usage: ostor-chaos --seconds N --seed S --root REPO --data DIR [--hosts N] [--netns] [--clients N] [--faults KIND,...]";

    private static IReadOnlySet<FaultKind> Parse(Func<string> value)
    {
        try
        {
            return FaultSchedule.ParseKinds(value());
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"--faults: {ex.Message}\n{Usage}");
        }
    }

    /// <summary>Parses the command line; throws <see cref="ArgumentException"/> with the usage on anything wrong.</summary>
    public static ChaosOptions Parse(string[] args)
    {
        int seconds = 60, seed = -1, hosts = 3, clients = 4;
        string? root = null, data = null;
        var netns = false;
        IReadOnlySet<FaultKind>? faults = null;
        for (var i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value\n{Usage}");
            int Number(int min, int max)
            {
                var name = args[i];
                var text = Value();
                return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
                    ? n
                    : throw new ArgumentException($"{name} must be a number from {min} to {max}, got '{text}'\n{Usage}");
            }
            switch (args[i])
            {
                case "--seconds": seconds = Number(10, 24 * 3600); break;
                case "--seed": seed = Number(0, int.MaxValue); break;
                case "--hosts": hosts = Number(2, 9); break;
                case "--clients": clients = Number(1, 32); break;
                case "--root": root = Value(); break;
                case "--data": data = Value(); break;
                case "--netns": netns = true; break;
                case "--faults": faults = Parse(Value); break;
                default: throw new ArgumentException($"unknown option '{args[i]}'\n{Usage}");
            }
        }
        if (seed < 0 || root is null || data is null)
        {
            throw new ArgumentException($"--seed, --root and --data are required\n{Usage}");
        }
        if (faults is not null && faults.Contains(FaultKind.Partition) && !netns)
        {
            throw new ArgumentException($"partitions need --netns\n{Usage}");
        }
        return new ChaosOptions(TimeSpan.FromSeconds(seconds), seed, hosts, netns, root, data, clients, faults);
    }
}
