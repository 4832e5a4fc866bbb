using System.Diagnostics;
using OrleansStorage.Client.Library;
using OrleansStorage.DataPort;
using OrleansStorage.Errors;
using OrleansStorage.Maps;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Real silo processes (the ostor-silo program, ADO.NET clustering on a private PostgreSQL), one
/// killed with SIGKILL while a client writes: no acknowledged write is lost, the host is resynced
/// when it comes back, and every replica holds what was acknowledged.
/// </summary>
public sealed class ProcessKillTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Hosts = 3;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-proc-test-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly Dictionary<int, Process> _silos = [];
    private readonly int[] _siloPorts = [.. Enumerable.Range(0, Hosts).Select(_ => Ports.Free())];
    private readonly int[] _gatewayPorts = [.. Enumerable.Range(0, Hosts).Select(_ => Ports.Free())];
    private readonly Eventually _eventually = new(output);
    private string _connectionString = "";

    public async Task InitializeAsync()
    {
        var postgres = await PrivatePostgres.GetAsync();
        if (postgres is not null)
        {
            _connectionString = await postgres.CreateDatabaseAsync("ostor_proc");
        }
    }

    public Task DisposeAsync()
    {
        foreach (var silo in _silos.Values)
        {
            if (!silo.HasExited)
            {
                silo.Kill(entireProcessTree: true);
                silo.WaitForExit(10_000);
            }
            silo.Dispose();
        }
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
        return Task.CompletedTask;
    }

    [SkippableFact]
    public async Task Sigkill_of_a_silo_process_under_load_loses_no_acknowledged_write()
    {
        Prerequisites.Require(_connectionString.Length > 0, "PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        await using var client = await StartClusterAsync(new OstorClientOptions());

        await client.CreateVolumeAsync("proc", 32L << 20, 2);
        var volume = await client.OpenVolumeAsync("proc");
        var initial = Replicas.RandomBytes(32 << 20, seed: 5);
        await volume.WriteAsync(0, initial);
        var load = new LoadRunner();
        load.Add(volume, [volume, volume], initial: initial);
        load.Start();
        await load.WaitForProgressAsync();

        var killed = _silos[2];
        killed.Kill(entireProcessTree: true); // SIGKILL: no shutdown, no goodbye to the cluster
        await killed.WaitForExitAsync();
        await _eventually.MapAsync(client.GetMapAsync, m => m.FindHost("host-2")!.State == HostState.Down, "host-2 marked Down");
        await load.WaitForProgressAsync(50);

        StartSilo(2);
        await _eventually.MapAsync(client.GetMapAsync, m => m.FindHost("host-2")!.State == HostState.Up && Eventually.GroupsFull(m),
            "host-2 back and resynced", TimeSpan.FromSeconds(120));
        await load.WaitForProgressAsync(20);
        await load.StopAsync();
        await load.VerifyAsync(client.Cluster);
        output.WriteLine($"max write latency {load.MaxLatency.TotalMilliseconds:0} ms over {load.Acknowledged} acknowledged writes");
    }

    /// <summary>
    /// Requests pipelined on a primary's data connection when its process dies fail at once with
    /// the connection (the kernel resets it), not after a timeout; the client library retries its
    /// own on the next map, and every write acknowledged before or after is read back. The volume's
    /// QoS limit keeps requests queued at the primary, so some are surely in flight at the kill.
    /// </summary>
    [SkippableFact]
    public async Task Requests_in_flight_on_a_killed_primarys_data_port_fail_at_once_and_nothing_acknowledged_is_lost()
    {
        Prerequisites.Require(_connectionString.Length > 0, "PostgreSQL unavailable: " + PrivatePostgres.UnavailableReason);
        // A long request timeout: the retries after the kill wait for the map, not for a link to time out.
        await using var client = await StartClusterAsync(new OstorClientOptions { RequestTimeout = TimeSpan.FromSeconds(30) });
        await client.CreateVolumeAsync("inflight", 16L << 20, 2);
        await client.SetVolumeQosAsync("inflight", new VolumeQos(0, 40, 0, 0));
        await _eventually.MapAsync(client.GetMapAsync, m => Eventually.GroupsFull(m), "volume placed");
        // A write through the library (which retries) first: the primary is active and holds its lease.
        await (await client.OpenVolumeAsync("inflight")).WriteAsync(512L << 10, new byte[4096]);
        // The raw requests carry the epoch of the map as it is now: the young cluster may have moved
        // on while the library's write went through. On a loaded machine its forward may even have
        // failed (a replica still activating), and that replica be resyncing: the premise is a group
        // whose other replica is in sync when the primary dies, so wait for one.
        var map = await _eventually.MapAsync(client.GetMapAsync, Eventually.GroupsFull, "both replicas in sync");
        var volume = map.FindVolume(map.Volumes.Single(v => v.Name == "inflight").VolumeId)!;
        var primary = volume.PlacementGroupOf(0).Primary;
        var endpoint = map.FindHost(primary)!.DataEndpoint;

        // Raw requests with a long timeout: if they failed by timing out, they would say so.
        await using var dataPort = new DataPortClient(null, TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(5));
        var sent = Enumerable.Range(0, 24).Select(i =>
        {
            var data = new byte[4096];
            data.AsSpan().Fill((byte)(i + 1));
            var header = new DataRequestHeader(DataOp.Write, 0, map.Epoch, volume.VolumeId, 0, i * 4096, 4096, 0, false, 0);
            return (Offset: i * 4096L, Data: data, Reply: dataPort.SendAsync(primary, endpoint, header, data));
        }).ToArray();
        await Task.WhenAny(sent.Select(s => s.Reply));
        _silos[int.Parse(primary["host-".Length..], System.Globalization.CultureInfo.InvariantCulture)].Kill(entireProcessTree: true);

        var acknowledged = new List<(long Offset, byte[] Data)>();
        var lost = 0;
        var stale = 0;
        foreach (var (offset, data, reply) in sent)
        {
            try
            {
                await reply;
                acknowledged.Add((offset, data));
            }
            catch (HostUnavailableException ex) when (ex.Message.Contains("data connection failed", StringComparison.Ordinal))
            {
                lost++;
            }
            catch (VolumeThrottledException)
            {
                // Past the QoS backlog: refused before it was queued; not acknowledged either.
            }
            catch (StaleEpochException)
            {
                // The map moved on before the kill (the young cluster's own changes): refused at the
                // epoch check, not acknowledged either.
                stale++;
            }
        }
        output.WriteLine($"{acknowledged.Count} raw writes acknowledged before the kill, {lost} failed with the connection, {stale} refused for a stale epoch");
        Assert.True(lost > 0, "no request was in flight at the kill: the test proved nothing");

        // The library's write to the same segment, sent after the kill, are retried until the map moves on.
        var handle = await client.OpenVolumeAsync("inflight");
        var after = Replicas.RandomBytes(64 * 1024, seed: 11);
        try
        {
            await handle.WriteAsync(256L << 10, after);
        }
        catch (StorageException)
        {
            output.WriteLine(Eventually.Describe(await client.GetMapAsync()));
            PrintHostWarnings();
            throw;
        }
        var back = new byte[4096];
        foreach (var (offset, data) in acknowledged)
        {
            await handle.ReadAsync(offset, back);
            Assert.True(back.AsSpan().SequenceEqual(data), $"the acknowledged write at {offset} was lost");
        }
        var afterBack = new byte[after.Length];
        await handle.ReadAsync(256L << 10, afterBack);
        Assert.True(afterBack.AsSpan().SequenceEqual(after), "the write retried after the kill was lost");
    }

    /// <summary>For a failure message: what the hosts' own code warned of and every map change, from their logs.</summary>
    private void PrintHostWarnings()
    {
        foreach (var log in Directory.EnumerateFiles(_root, "host-*.log").Order())
        {
            using var reader = new StreamReader(new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
            while (reader.ReadLine() is { } line)
            {
                if (line.Contains(": OrleansStorage.", StringComparison.Ordinal)
                    && (!line.Contains(" info: ", StringComparison.Ordinal) || line.Contains("Cluster map is now", StringComparison.Ordinal)))
                {
                    output.WriteLine($"{Path.GetFileNameWithoutExtension(log)}: {line[..Math.Min(line.Length, 400)]}");
                }
            }
        }
    }

    /// <summary>Starts every host and connects a client through all their gateways once they are Up.</summary>
    private async Task<OstorClient> StartClusterAsync(OstorClientOptions options)
    {
        for (var host = 1; host <= Hosts; host++)
        {
            StartSilo(host);
        }
        options.Gateways.Clear();
        foreach (var port in _gatewayPorts)
        {
            options.Gateways.Add($"127.0.0.1:{port}");
        }
        var client = await ConnectAsync(options);
        await _eventually.MapAsync(client.GetMapAsync, m => m.Hosts.Count(h => h.State == HostState.Up) == Hosts, $"{Hosts} hosts Up", TimeSpan.FromSeconds(120));
        return client;
    }

    private void StartSilo(int host)
    {
        var silo = Path.Combine(AppContext.BaseDirectory, "ostor-silo.dll");
        var log = Path.Combine(_root, $"host-{host}.log");
        Directory.CreateDirectory(_root);
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList =
            {
                silo,
                "--host-id", $"host-{host}",
                "--data", Path.Combine(_root, $"host-{host}"),
                "--silo-port", _siloPorts[host - 1].ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--gateway-port", _gatewayPorts[host - 1].ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--postgres", _connectionString,
                // Three silos on one machine would all claim the default dashboard port 18080.
                "--http-port", "0",
            },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        // Small segments and a short grace period keep the test quick; the rest is the shipped configuration.
        start.Environment["OSTOR_Management__SegmentSizeBytes"] = (1 << 20).ToString(System.Globalization.CultureInfo.InvariantCulture);
        start.Environment["OSTOR_Management__PlacementGroupsPerVolume"] = "16";
        start.Environment["OSTOR_Management__MembershipSettleTime"] = "00:00:02";
        var process = Process.Start(start) ?? throw new InvalidOperationException("could not start ostor-silo");
        var writer = ProcessLog.Attach(process, log, append: true);
        process.Exited += (_, _) => writer.Dispose();
        process.EnableRaisingEvents = true;
        _silos[host] = process;
    }

    /// <summary>Connects once the silos accept clients, which takes a few seconds after they start.</summary>
    private async Task<OstorClient> ConnectAsync(OstorClientOptions options)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (true)
        {
            try
            {
                return await OstorClient.ConnectAsync(options);
            }
            catch (Exception) when (DateTime.UtcNow < deadline)
            {
                foreach (var (host, silo) in _silos.Where(s => s.Value.HasExited))
                {
                    Assert.Fail($"host-{host} exited with {silo.ExitCode}: {ProcessLog.Read(Path.Combine(_root, $"host-{host}.log"))}");
                }
                await Task.Delay(1000);
            }
        }
    }
}
