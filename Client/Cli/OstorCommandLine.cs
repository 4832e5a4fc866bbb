using System.CommandLine;
using System.Globalization;
using System.Text;
using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Maps;

namespace OrleansStorage.Client.Cli;

/// <summary>The <c>ostor</c> command line: volume admin, host and map views, file transfers.</summary>
public static partial class OstorCommandLine
{
    public const string GatewayEnvironmentVariable = "OSTOR_GATEWAY";

    private static readonly Option<string?> Gateway = new("--gateway")
    {
        Description = $"Cluster gateway(s) as host:port[,host:port]; default ${GatewayEnvironmentVariable} or {OstorClientOptions.LocalGateway}",
        Recursive = true,
    };

    public const string PkiEnvironmentVariable = "OSTOR_PKI";

    public const string ClientEnvironmentVariable = "OSTOR_CLIENT";

    private static readonly Option<string?> Pki = new("--pki")
    {
        Description = $"The cluster's certificates folder (TLS to the gateways); default ${PkiEnvironmentVariable}, or plain text when neither is set",
        Recursive = true,
    };

    private static readonly Option<string?> ClientName = new("--client")
    {
        Description = $"Whose client certificate to present; default ${ClientEnvironmentVariable} or '{OstorClientOptions.DefaultClientName}'",
        Recursive = true,
    };

    public static RootCommand Build()
    {
        var root = new RootCommand("ostor: administer and use OrleansStorage volumes") { Gateway, Pki, ClientName };
        root.Add(VolumeCommands());
        root.Add(SnapshotCommands());
        root.Add(HostCommands());
        root.Add(ClusterCommands());
        root.Add(StatusCommand());
        root.Add(MapCommand());
        root.Add(PutCommand());
        root.Add(GetCommand());
        root.Add(NbdCommands());
        root.Add(PkiCommands());
        root.Add(AuthCommands());
        return root;
    }

    /// <summary>Runs a command line; every failure prints one line to standard error and exits non-zero.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        var parse = Build().Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                Console.Error.WriteLine($"ostor: {ParseErrors.Plain(error.Message)}");
            }
            return 2;
        }
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (StorageException ex)
        {
            Console.Error.WriteLine($"ostor: {ex.Message}");
            return 1;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or OperationCanceledException or TimeoutException or OrleansException or System.Security.Cryptography.CryptographicException)
        {
            // The message says what happened ("No space left on device : '/x'"); .NET's type names are not for the user.
            Console.Error.WriteLine($"ostor: {(ex is OperationCanceledException ? "cancelled" : ex.Message)}");
            return 1;
        }
    }

    private static Command VolumeCommands()
    {
        var volume = new Command("volume", "Create, list, resize and delete volumes");

        var name = new Argument<string>("NAME") { Description = "Volume name" };
        var size = new Option<string>("--size") { Description = "Size, e.g. 256MiB or 1GiB (a multiple of 4 KiB)", Required = true };
        var replicas = new Option<int>("--replicas") { Description = "Replication factor, 1 to 3", DefaultValueFactory = _ => 1 };
        var create = new Command("create", "Create a volume, optionally with QoS limits (see set-qos)") { name, size, replicas };
        var createQos = new QosSwitches();
        createQos.AddTo(create);
        create.SetAction((parse, ct) =>
        {
            var qos = createQos.Apply(parse, null);
            return WithClientAsync(parse, async client =>
            {
                var created = await client.CreateVolumeAsync(parse.GetValue(name)!, ByteSize.Parse(parse.GetValue(size)!), parse.GetValue(replicas));
                if (qos is not null)
                {
                    created = await client.SetVolumeQosAsync(created.Name, qos);
                }
                Console.WriteLine($"created volume '{created.Name}' ({ByteSize.Format(created.SizeBytes)}, {created.ReplicationFactor} replica(s), {created.PlacementGroups.Length} placement groups{(created.Qos is null ? "" : $", QoS {created.Qos}")}) at epoch {client.Maps.Current.Epoch}");
            });
        });
        volume.Add(create);

        var list = new Command("list", "List volumes");
        list.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var map = await client.GetMapAsync();
            var rows = map.Volumes.OrderBy(v => v.Name, StringComparer.Ordinal)
                .Select(v => new[] { v.Name, ByteSize.Format(v.SizeBytes), v.SizeBytes.ToString(CultureInfo.InvariantCulture), v.ReplicationFactor.ToString(CultureInfo.InvariantCulture), v.PlacementGroups.Length.ToString(CultureInfo.InvariantCulture), v.VolumeId.ToString(), Health(v), v.Qos?.ToString() ?? "-", v.Snapshots.Length.ToString(CultureInfo.InvariantCulture), ParentName(map, v) });
            PrintTable(["NAME", "SIZE", "BYTES", "REPLICAS", "PGS", "ID", "HEALTH", "QOS", "SNAPSHOTS", "CLONE OF"], rows);
        }));
        volume.Add(list);

        var resizeName = new Argument<string>("NAME") { Description = "Volume name" };
        var newSize = new Option<string>("--size") { Description = "New size (grow only)", Required = true };
        var resize = new Command("resize", "Grow a volume") { resizeName, newSize };
        resize.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var resized = await client.ResizeVolumeAsync(parse.GetValue(resizeName)!, ByteSize.Parse(parse.GetValue(newSize)!));
            Console.WriteLine($"volume '{resized.Name}' is now {ByteSize.Format(resized.SizeBytes)} (epoch {client.Maps.Current.Epoch})");
        }));
        volume.Add(resize);

        var deleteName = new Argument<string>("NAME") { Description = "Volume name" };
        var withSnapshots = new Option<bool>("--with-snapshots") { Description = "Delete the volume's snapshots too (without it, a volume with snapshots is refused)" };
        var delete = new Command("delete", "Delete a volume and its data on every host") { deleteName, withSnapshots };
        delete.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            await client.DeleteVolumeAsync(parse.GetValue(deleteName)!, parse.GetValue(withSnapshots));
            Console.WriteLine($"deleted volume '{parse.GetValue(deleteName)}' (epoch {client.Maps.Current.Epoch})");
        }));
        volume.Add(delete);
        volume.Add(SetQosCommand());
        foreach (var command in CloneCommands())
        {
            volume.Add(command);
        }

        volume.Add(ScrubCommand("verify", "Check every block of every replica against its checksum and the other replicas; change nothing", repair: false, lightByDefault: false));
        volume.Add(ScrubCommand("scrub", "Compare every segment's write version across its replicas and resync those that differ; --deep: check every block, rewrite bad or different copies", repair: true, lightByDefault: true));
        volume.Add(ScrubCommand("repair", "Rewrite every bad or different copy of a block from a good one (what verify found)", repair: true, lightByDefault: false));
        return volume;
    }

    /// <summary>
    /// verify, scrub and repair: one pass over every segment's replicas, told whether to fix what it
    /// finds. Deep (every block against its checksum) unless <paramref name="lightByDefault"/> and no --deep.
    /// </summary>
    /// <summary>A clone's parent as VOL@SNAP; "-" for a volume that is not (or no longer) a clone.</summary>
    private static string ParentName(ClusterMap map, VolumeInfo volume) =>
        volume.Parent is { } parent && map.FindVolume(parent.VolumeId) is { } source && source.FindSnapshot(parent.SnapshotId) is { } snapshot
            ? $"{source.Name}@{snapshot.Name}"
            : "-";

    private static Command ScrubCommand(string name, string description, bool repair, bool lightByDefault)
    {
        var volumeName = new Argument<string>("NAME") { Description = "Volume name" };
        var deepOption = new Option<bool>("--deep") { Description = "Read and check every block on every replica, not only the write versions" };
        var command = new Command(name, description) { volumeName };
        if (lightByDefault)
        {
            command.Add(deepOption);
        }
        command.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var deep = !lightByDefault || parse.GetValue(deepOption);
            var handle = await client.OpenVolumeAsync(parse.GetValue(volumeName)!);
            using var progress = new TransferProgress(name, handle.SizeBytes);
            var result = await handle.ScrubAsync(repair, bytes => progress.Add(bytes), ct, deep);
            progress.Dispose();
            foreach (var problem in result.Problems)
            {
                Console.WriteLine(problem);
            }
            var checkedBytes = ByteSize.Format(result.BytesChecked);
            if (result.BlocksLost > 0)
            {
                throw new DataCorruptException($"volume '{handle.Name}': {result.BlocksLost} block(s) have no good copy on any replica; reads of them fail ({result.BlocksRepaired} block copies repaired)");
            }
            if (result.Problems.Count > 0 && !repair)
            {
                throw new StorageException($"volume '{handle.Name}': {result.Problems.Count} problems found; 'ostor volume repair {handle.Name}' fixes them");
            }
            Console.WriteLine((deep, result.Problems.Count) switch
            {
                (true, 0) => $"volume '{handle.Name}': every block of every replica of all {handle.Info.SegmentCount} segments is checksum-true and identical ({checkedBytes} checked, {progress.Summary()})",
                (true, _) => $"volume '{handle.Name}': {result.BlocksRepaired} block copies repaired from good ones ({checkedBytes} checked, {progress.Summary()})",
                (false, 0) => $"volume '{handle.Name}': every replica of all {handle.Info.SegmentCount} segments holds the primary's write version (light scrub; --deep reads every block)",
                (false, _) => $"volume '{handle.Name}': {result.Problems.Count} replicas differ from their primary's write version and are being resynced (light scrub)",
            });
        }));
        return command;
    }

    private static Command HostCommands()
    {
        var host = new Command("host", "Hosts of the cluster");
        var list = new Command("list", "Hosts with state, capacity, usage, epoch and mismatch reports");
        list.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var status = await client.GetStatusAsync();
            if (ClusterStatusView.DatabaseLine(status.Management) is { } database)
            {
                Console.WriteLine(database); // the hosts serve on; what waits is said here, as in 'ostor status'
            }
            var rows = status.Hosts.OrderBy(h => h.Host.HostId, StringComparer.Ordinal).Select(h => new[]
            {
                h.Host.HostId,
                h.Host.NearFull ? $"{h.Host.State} (near full: no new replicas)" : h.Host.State.ToString(),
                ByteSize.Format(h.Host.CapacityBytes),
                h.Server is null ? "-" : ByteSize.Format(h.Server.BytesUsed),
                h.Server is null ? "-" : h.Server.Epoch.ToString(CultureInfo.InvariantCulture),
                h.MismatchReports.ToString(CultureInfo.InvariantCulture),
                h.Host.Endpoint,
                h.Error is null ? "" : "unreachable: " + h.Error,
            });
            PrintTable(["HOST", "STATE", "CAPACITY", "USED", "EPOCH", "MISMATCHES", "GATEWAY", ""], rows);
        }));
        host.Add(list);

        var evacuateName = new Argument<string>("HOST") { Description = "HostId" };
        var wait = new Option<bool>("--wait") { Description = "Follow the moves until no placement group is left on the host" };
        var evacuate = new Command("evacuate", "Move every placement group off a host, online (then 'ostor host remove')") { evacuateName, wait };
        evacuate.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var hostId = parse.GetValue(evacuateName)!;
            var map = await client.EvacuateHostAsync(hostId);
            Console.WriteLine($"evacuating '{hostId}': {HeldBy(map, hostId)} placement groups to move (epoch {map.Epoch})");
            if (parse.GetValue(wait))
            {
                await FollowAsync(client, m => HeldBy(m, hostId) == 0, ct);
                Console.WriteLine($"'{hostId}' holds nothing now; remove it with: ostor host remove {hostId}");
            }
        }));
        host.Add(evacuate);

        var removeName = new Argument<string>("HOST") { Description = "HostId" };
        var remove = new Command("remove", "Remove an evacuated (or Out) host from the map") { removeName };
        remove.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var map = await client.RemoveHostAsync(parse.GetValue(removeName)!);
            Console.WriteLine($"removed host '{parse.GetValue(removeName)}' (epoch {map.Epoch})");
        }));
        host.Add(remove);
        return host;
    }

    private static Command ClusterCommands()
    {
        var cluster = new Command("cluster", "Cluster-wide operations");
        var noWait = new Option<bool>("--no-wait") { Description = "Plan one step and return; do not follow it" };
        var rebalance = new Command("rebalance", "Move placement groups online until replicas and primaries are even across Up hosts") { noWait };
        rebalance.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            for (var step = 1; ; step++)
            {
                var before = await client.GetMapAsync();
                var after = await client.RebalanceStepAsync();
                if (after.Epoch == before.Epoch)
                {
                    Console.WriteLine(after.IsMoving() ? "data is still moving (see 'ostor status'); run again when it is done" : $"balanced (epoch {after.Epoch})");
                    return;
                }
                var moves = after.AllGroups().Sum(x => x.Group.Pending.Length);
                Console.WriteLine(moves > 0
                    ? $"step {step}: moving {moves} replicas (epoch {after.Epoch})"
                    : $"step {step}: primaries reordered (epoch {after.Epoch})");
                if (parse.GetValue(noWait))
                {
                    return;
                }
                await FollowAsync(client, m => !m.IsMoving(), ct);
            }
        }));
        cluster.Add(rebalance);

        var expectHosts = new Option<int>("--expect-hosts") { Description = "Refuse (and change nothing) until this many hosts are live; default: whoever is live" };
        var recover = new Command("recover-map", "Rebuild a lost cluster map from the hosts' disks (hosts started with --recover); says what it chose where hosts differ") { expectHosts };
        recover.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var report = await client.RecoverMapAsync(parse.GetValue(expectHosts));
            foreach (var line in report.Lines)
            {
                Console.WriteLine(line);
            }
        }));
        cluster.Add(recover);
        return cluster;
    }

    private static Command StatusCommand()
    {
        var watch = new Option<bool>("--watch") { Description = "Redraw every --interval until interrupted" };
        var interval = new Option<double>("--interval") { Description = "Seconds between redraws with --watch", DefaultValueFactory = _ => 1.0 };
        var status = new Command("status", "Epoch, hosts and their state, degraded and recovering placement groups, recovery progress") { watch, interval };
        status.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            if (!parse.GetValue(watch))
            {
                Console.Write(ClusterStatusView.Render(await client.GetStatusAsync(), DateTimeOffset.UtcNow));
                return;
            }
            var pause = TimeSpan.FromSeconds(Math.Clamp(parse.GetValue(interval), 0.1, 3600));
            while (!ct.IsCancellationRequested)
            {
                string screen;
                try
                {
                    screen = ClusterStatusView.Render(await client.GetStatusAsync(), DateTimeOffset.UtcNow);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    screen = $"cannot get the status right now (the management service may be failing over): {ex.Message}\n";
                }
                // Clear and home the cursor on a terminal; a redirected output gets one report after another.
                Console.Write(Console.IsOutputRedirected ? screen + "\n" : "\u001b[H\u001b[2J" + DateTimeOffset.Now.ToString("HH:mm:ss ", CultureInfo.InvariantCulture) + screen);
                try
                {
                    await Task.Delay(pause, ct);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }));
        return status;
    }

    /// <summary>"ok", or how many of the volume's groups are unavailable, degraded or moving.</summary>
    private static string Health(VolumeInfo volume)
    {
        var unavailable = volume.PlacementGroups.Count(pg => !pg.IsAvailable);
        var degraded = volume.PlacementGroups.Count(pg => pg.IsDegraded(volume.ReplicationFactor));
        var moving = volume.PlacementGroups.Count(pg => pg.IsMoving);
        var parts = new List<string>();
        if (unavailable > 0)
        {
            parts.Add($"{unavailable} unavailable");
        }
        if (degraded > 0)
        {
            parts.Add($"{degraded} degraded");
        }
        if (moving > 0)
        {
            parts.Add($"{moving} recovering");
        }
        return parts.Count == 0 ? "ok" : string.Join(", ", parts);
    }

    private static int HeldBy(ClusterMap map, string hostId) =>
        map.AllGroups().Count(x => x.Group.References(hostId));

    /// <summary>Shows recovery progress on standard error until <paramref name="done"/> holds for the map.</summary>
    private static async Task FollowAsync(OstorClient client, Func<ClusterMap, bool> done, CancellationToken cancellationToken)
    {
        while (true)
        {
            var status = await client.GetStatusAsync();
            if (done(status.Map))
            {
                if (!Console.IsErrorRedirected)
                {
                    Console.Error.WriteLine();
                }
                return;
            }
            var copies = status.Copies.ToList();
            var total = copies.Sum(c => c.SegmentsTotal);
            var fraction = total == 0 ? 0 : (double)copies.Sum(c => c.SegmentsDone) / total;
            var line = string.Create(CultureInfo.InvariantCulture,
                $"{status.RecoveringGroups} groups moving, {copies.Count} copies {ProgressBar.Render(fraction)} {ByteSize.Format(copies.Sum(c => c.BytesCopied))} copied");
            Console.Error.Write(Console.IsErrorRedirected ? line + "\n" : "\r" + line + "   ");
            await Task.Delay(TimeSpan.FromSeconds(Console.IsErrorRedirected ? 5 : 0.5), cancellationToken);
        }
    }

    private static Command MapCommand()
    {
        var map = new Command("map", "The cluster map: epoch, hosts, volumes and their placement groups");
        map.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var current = await client.GetMapAsync();
            Console.WriteLine($"cluster {current.ClusterId}, epoch {current.Epoch}");
            Console.WriteLine($"hosts ({current.Hosts.Length}):");
            foreach (var h in current.Hosts.OrderBy(h => h.HostId, StringComparer.Ordinal))
            {
                Console.WriteLine($"  {h.HostId,-12} {h.State,-8} {ByteSize.Format(h.CapacityBytes),10}  {h.Endpoint}");
            }
            Console.WriteLine($"volumes ({current.Volumes.Length}):");
            foreach (var v in current.Volumes.OrderBy(v => v.Name, StringComparer.Ordinal))
            {
                Console.WriteLine($"  {v.Name} {ByteSize.Format(v.SizeBytes)} factor {v.ReplicationFactor}, segment {ByteSize.Format(v.SegmentSizeBytes)}, {v.PlacementGroups.Length} PGs, id {v.VolumeId}");
                foreach (var pg in v.PlacementGroups)
                {
                    Console.WriteLine($"    pg {pg.Index,3}: {pg.Describe()}");
                }
            }
            if (!current.Tombstones.IsEmpty)
            {
                Console.WriteLine($"deleted volumes whose files some host still has to remove ({current.Tombstones.Length}):");
                foreach (var t in current.Tombstones)
                {
                    Console.WriteLine($"  {t.Name} id {t.VolumeId}, deleted at epoch {t.DeletedAtEpoch}, waiting for {string.Join(", ", t.PendingHosts)}");
                }
            }
        }));
        return map;
    }

    private static Command PutCommand()
    {
        var volume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var file = new Argument<string>("FILE") { Description = "Local file, block device, pipe or character device to copy into the volume ('-': standard input)" };
        var offset = new Option<string>("--offset") { Description = "Byte offset in the volume", DefaultValueFactory = _ => "0" };
        var length = new Option<string?>("--length") { Description = "How many bytes (default: all the source holds; a stream is read to its end)" };
        var fua = new Option<bool>("--fua") { Description = "Make every chunk durable on every replica before it counts as written (forced unit access), not only at the final flush" };
        var put = new Command("put", "Copy a local file or device into a volume") { volume, file, offset, length, fua };
        put.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var handle = await client.OpenVolumeAsync(parse.GetValue(volume)!);
            using var source = TransferSource.Open(parse.GetValue(file)!);
            long? count = parse.GetValue(length) is { } text ? ByteSize.Parse(text) : null;
            using var progress = new TransferProgress("put", count ?? source.Length ?? 0);
            await VolumeTransfer.PutAsync(handle, source, ByteSize.Parse(parse.GetValue(offset)!), count, progress, ct, parse.GetValue(fua));
            progress.Dispose();
            Console.WriteLine($"put '{source.Path}' into '{handle.Name}': {progress.Summary()}");
        }));
        return put;
    }

    private static Command GetCommand()
    {
        var volume = new Argument<string>("VOLUME") { Description = "Volume name" };
        var file = new Argument<string>("FILE") { Description = "Local file to write" };
        var offset = new Option<string>("--offset") { Description = "Byte offset in the volume", DefaultValueFactory = _ => "0" };
        var length = new Option<string?>("--length") { Description = "How many bytes (default: to the end of the volume)" };
        var get = new Command("get", "Copy (part of) a volume into a local file") { volume, file, offset, length };
        get.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var handle = await client.OpenVolumeAsync(parse.GetValue(volume)!);
            var start = ByteSize.Parse(parse.GetValue(offset)!);
            long? count = parse.GetValue(length) is { } text ? ByteSize.Parse(text) : null;
            var path = parse.GetValue(file)!;
            using var progress = new TransferProgress("get", count ?? Math.Max(0, handle.SizeBytes - start));
            await VolumeTransfer.GetAsync(handle, path, start, count, progress, ct);
            progress.Dispose();
            Console.WriteLine($"got '{handle.Name}' into '{path}': {progress.Summary()}");
        }));
        return get;
    }

    private static async Task<int> WithClientAsync(ParseResult parse, Func<OstorClient, Task> action, bool subscribe = false)
    {
        var options = new OstorClientOptions
        {
            SubscribeToMapChanges = subscribe,
            PkiDirectory = PkiDirectoryOf(parse) ?? "",
            ClientName = parse.GetValue(ClientName) ?? NonEmpty(Environment.GetEnvironmentVariable(ClientEnvironmentVariable)) ?? OstorClientOptions.DefaultClientName,
        };
        var gateways = parse.GetValue(Gateway) ?? Environment.GetEnvironmentVariable(GatewayEnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(gateways))
        {
            options.Gateways.Clear();
            foreach (var gateway in gateways.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                options.Gateways.Add(gateway);
            }
        }
        await using var client = await OstorClient.ConnectAsync(options);
        await action(client);
        return 0;
    }

    private static void PrintTable(string[] header, IEnumerable<string[]> rows)
    {
        var text = new StringBuilder();
        Table.Print(text, header, rows);
        Console.Write(text);
    }
}
