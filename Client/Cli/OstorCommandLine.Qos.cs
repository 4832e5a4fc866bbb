using System.CommandLine;
using OrleansStorage.Errors;
using OrleansStorage.Maps;

namespace OrleansStorage.Client.Cli;

/// <summary><c>ostor volume set-qos</c> and the QoS switches of <c>volume create</c>.</summary>
public static partial class OstorCommandLine
{
    /// <summary>The six QoS switches; each given one replaces that limit, 0 lifts it.</summary>
    private sealed class QosSwitches
    {
        private readonly Option<long?> _iops = new("--iops") { Description = "Operations per second, reads and writes each (0: no limit)" };
        private readonly Option<string?> _bps = new("--bps") { Description = "Bytes per second, reads and writes each, e.g. 50MiB (0: no limit)" };
        private readonly Option<long?> _readIops = new("--read-iops") { Description = "Read operations per second (0: no limit)" };
        private readonly Option<long?> _writeIops = new("--write-iops") { Description = "Write operations per second, trims included (0: no limit)" };
        private readonly Option<string?> _readBps = new("--read-bps") { Description = "Read bytes per second (0: no limit)" };
        private readonly Option<string?> _writeBps = new("--write-bps") { Description = "Written bytes per second (0: no limit)" };

        public void AddTo(Command command)
        {
            foreach (var option in new Option[] { _iops, _bps, _readIops, _writeIops, _readBps, _writeBps })
            {
                command.Add(option);
            }
        }

        /// <summary><paramref name="current"/> with what the command line gives, checked; null when it gives nothing.</summary>
        public VolumeQos? Apply(ParseResult parse, VolumeQos? current)
        {
            long? Bytes(Option<string?> option) => parse.GetValue(option) is { } text ? ByteSize.Parse(text) : null;
            var iops = parse.GetValue(_iops);
            var bps = Bytes(_bps);
            var readIops = parse.GetValue(_readIops) ?? iops;
            var writeIops = parse.GetValue(_writeIops) ?? iops;
            var readBps = Bytes(_readBps) ?? bps;
            var writeBps = Bytes(_writeBps) ?? bps;
            if (readIops is null && writeIops is null && readBps is null && writeBps is null)
            {
                return null;
            }
            var from = current ?? VolumeQos.Unlimited;
            return new VolumeQos(readIops ?? from.ReadIops, writeIops ?? from.WriteIops, readBps ?? from.ReadBytesPerSecond, writeBps ?? from.WriteBytesPerSecond).Checked();
        }
    }

    private static Command SetQosCommand()
    {
        var name = new Argument<string>("NAME") { Description = "Volume name" };
        var switches = new QosSwitches();
        var setQos = new Command("set-qos", "Limit a volume's I/O for all its clients together (an epoch like any map change); switches not given keep their limit") { name };
        switches.AddTo(setQos);
        setQos.SetAction((parse, ct) =>
        {
            // Checked before the cluster is asked: a bad value is one line either way.
            _ = switches.Apply(parse, null) ?? throw new InvalidRequestException("give at least one of --iops, --bps, --read-iops, --write-iops, --read-bps, --write-bps (0 lifts a limit)");
            return WithClientAsync(parse, async client =>
            {
                var volume = (await client.GetMapAsync()).FindVolume(parse.GetValue(name)!) ?? throw new VolumeNotFoundException(parse.GetValue(name)!);
                var updated = await client.SetVolumeQosAsync(volume.Name, switches.Apply(parse, volume.Qos)!);
                Console.WriteLine($"volume '{updated.Name}' QoS: {updated.Qos?.ToString() ?? "none"} (epoch {client.Maps.Current.Epoch})");
            });
        });
        return setQos;
    }
}
