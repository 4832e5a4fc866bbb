using System.CommandLine;
using System.Globalization;
using System.Text.Json;

namespace OrleansStorage.Client.Cli;

/// <summary><c>ostor snapshot ...</c> (docs/snapshots.md).</summary>
public static partial class OstorCommandLine
{
    private static Command SnapshotCommands()
    {
        var snapshot = new Command("snapshot", "Take, list, compare, roll back to and delete snapshots of a volume (read one as VOL@SNAP)");

        var createVolume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var createName = new Argument<string>("SNAPSHOT") { Description = "Snapshot name (letters, digits, '-', '_', '.')" };
        var create = new Command("create", "Take a snapshot: every write acknowledged before is in it, none sent after it returns") { createVolume, createName };
        create.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var taken = await client.CreateSnapshotAsync(parse.GetValue(createVolume)!, parse.GetValue(createName)!);
            Console.WriteLine($"snapshot '{parse.GetValue(createVolume)}@{taken.Name}' taken at epoch {taken.Epoch}");
        }));
        snapshot.Add(create);

        var listVolume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var list = new Command("list", "A volume's snapshots, oldest first, with the bytes each alone holds (freed by deleting it)") { listVolume };
        list.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var rows = (await client.ListSnapshotsAsync(parse.GetValue(listVolume)!)).Select(s => new[]
            {
                s.Snapshot.Name,
                s.Snapshot.Epoch.ToString(CultureInfo.InvariantCulture),
                s.Snapshot.Created.ToString("u", CultureInfo.InvariantCulture),
                ByteSize.Format(s.Snapshot.SizeBytes),
                ByteSize.Format(s.ExclusiveBytes),
            });
            PrintTable(["NAME", "EPOCH", "CREATED", "SIZE", "HELD ONLY BY IT"], rows);
        }));
        snapshot.Add(list);

        var deleteVolume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var deleteName = new Argument<string>("SNAPSHOT") { Description = "Snapshot name" };
        var delete = new Command("delete", "Delete a snapshot; every host frees the copies only it needed") { deleteVolume, deleteName };
        delete.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            await client.DeleteSnapshotAsync(parse.GetValue(deleteVolume)!, parse.GetValue(deleteName)!);
            Console.WriteLine($"deleted snapshot '{parse.GetValue(deleteVolume)}@{parse.GetValue(deleteName)}' (epoch {client.Maps.Current.Epoch})");
        }));
        snapshot.Add(delete);

        var diffVolume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var diffFrom = new Argument<string>("FROM") { Description = "The older snapshot" };
        var diffTo = new Argument<string?>("TO") { Description = "The newer snapshot (default: the volume as it is now)", Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "One JSON object: {\"ranges\":[{\"offset\":..,\"length\":..}],\"bytes\":..}" };
        var diff = new Command("diff", "The byte ranges that changed between two snapshots (or a snapshot and now), from write versions, reading no data") { diffVolume, diffFrom, diffTo, json };
        diff.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var ranges = await client.DiffAsync(parse.GetValue(diffVolume)!, parse.GetValue(diffFrom)!, parse.GetValue(diffTo));
            var total = ranges.Sum(r => r.Length);
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { ranges = ranges.Select(r => new { offset = r.Offset, length = r.Length }), bytes = total }));
                return;
            }
            foreach (var (offset, length) in ranges)
            {
                Console.WriteLine($"{offset}\t{length}");
            }
            Console.Error.WriteLine($"{ranges.Count} ranges, {ByteSize.Format(total)} changed");
        }));
        snapshot.Add(diff);

        var rollbackVolume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var rollbackName = new Argument<string>("SNAPSHOT") { Description = "Snapshot to go back to" };
        var force = new Option<bool>("--force") { Description = "Roll back even while an NBD client has the volume open for writing" };
        var rollback = new Command("rollback", "Make the volume hold what the snapshot holds (only what changed is rewritten); refused while it is open for writing") { rollbackVolume, rollbackName, force };
        rollback.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var bytes = await client.RollbackAsync(parse.GetValue(rollbackVolume)!, parse.GetValue(rollbackName)!, parse.GetValue(force), cancellationToken: ct);
            Console.WriteLine($"volume '{parse.GetValue(rollbackVolume)}' rolled back to '{parse.GetValue(rollbackName)}': {ByteSize.Format(bytes)} rewritten");
        }));
        snapshot.Add(rollback);
        return snapshot;
    }

    /// <summary><c>ostor volume clone</c> and <c>ostor volume flatten</c>.</summary>
    private static IEnumerable<Command> CloneCommands()
    {
        var source = new Argument<string>("VOLUME@SNAPSHOT") { Description = "The snapshot to clone" };
        var name = new Argument<string>("NAME") { Description = "The new volume's name" };
        var replicas = new Option<int>("--replicas") { Description = "The clone's replication factor, 1 to 3", DefaultValueFactory = _ => 1 };
        var clone = new Command("clone", "A writable volume that reads the snapshot where it was never written (copy on first write)") { source, name, replicas };
        clone.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var created = await client.CloneVolumeAsync(parse.GetValue(source)!, parse.GetValue(name)!, parse.GetValue(replicas));
            Console.WriteLine($"cloned '{parse.GetValue(source)}' as volume '{created.Name}' ({ByteSize.Format(created.SizeBytes)}, {created.ReplicationFactor} replica(s)) at epoch {client.Maps.Current.Epoch}");
        }));
        yield return clone;

        var flattenName = new Argument<string>("NAME") { Description = "The clone" };
        var flatten = new Command("flatten", "Copy into a clone everything it still reads from its snapshot, online, then cut the link") { flattenName };
        flatten.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var started = DateTime.UtcNow;
            var copied = await client.FlattenAsync(parse.GetValue(flattenName)!, (done, total) =>
            {
                if (done == total || done % 16 == 0)
                {
                    Console.Error.Write($"\rflatten: {done}/{total} segments");
                }
            }, ct);
            Console.Error.WriteLine();
            Console.WriteLine($"volume '{parse.GetValue(flattenName)}' flattened: {copied} segments copied in {(DateTime.UtcNow - started).TotalSeconds:0.0} s; it no longer depends on its snapshot");
        }));
        yield return flatten;
    }
}
