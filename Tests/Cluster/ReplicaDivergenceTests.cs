using OrleansStorage.Errors;
using OrleansStorage.Maps;
using OrleansStorage.Segments;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Two replicas of a segment that report the same version hold the same bytes, and the same
/// snapshot copies (docs/failures.md, "Write versions"; docs/snapshots.md). The interleavings are
/// set up with seams, never with sleeps: a replica refuses one forwarded write as a map
/// disagreement; a primary's fill of a replica is held between two segments while the test writes
/// and takes a snapshot.
/// </summary>
[Collection(FailureClusterCollection.Name)]
public sealed class ReplicaDivergenceTests(FailureClusterFixture fixture, ITestOutputHelper output)
{
    private const int Segment = StorageClusterFixture.SegmentSize;
    private const int Chunk = 64 * 1024;
    private readonly Eventually _eventually = new(output);

    [SkippableTheory]
    [InlineData(ReplicaWriteFault.RefuseAsStale)]
    [InlineData(ReplicaWriteFault.RefuseAsMisdirected)]
    public async Task A_write_a_replica_refused_for_its_map_never_leaves_it_at_the_primarys_version_without_that_write(ReplicaWriteFault refusal)
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.Healthy, "a healthy cluster before the test");
        var name = "refused-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var map = await MapAtRestAsync();
        var volume = map.FindVolume(name)!;
        var (primary, replica) = (volume.PlacementGroupOf(0).Replicas[0], volume.PlacementGroupOf(0).Replicas[1]);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        output.WriteLine($"epoch {map.Epoch}: segment 0 on '{primary}' (primary) and '{replica}'");
        await WriteOnPrimaryAsync(primary, segment, 0, Replicas.RandomBytes(Chunk, seed: 41));

        // Straight to the primary, as a client that gives up after one failure would send it.
        fixture.ReplicaFaults.FaultNext(replica, 1, refusal);
        var refused = await Assert.ThrowsAnyAsync<StorageException>(() =>
            fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 42), false)));
        output.WriteLine($"the write the replica refused failed: {refused.Message}");
        Assert.Equal(0, fixture.ReplicaFaults.Remaining(replica));
        // The next write, to another range of the segment, is applied everywhere.
        await WriteOnPrimaryAsync(primary, segment, 2 * Chunk, Replicas.RandomBytes(Chunk, seed: 43));

        var (versions, bytes) = await HeldByAsync(segment, primary, replica);
        output.WriteLine($"after the next write: '{primary}' at {Describe(versions[0])}, '{replica}' at {Describe(versions[1])}");
        Assert.False(versions[0] == versions[1] && !bytes[0].AsSpan().SequenceEqual(bytes[1]),
            $"'{primary}' and '{replica}' both report version {Describe(versions[0])} for segment 0, but only '{primary}' holds the write '{replica}' refused: a resync or scrub trusts them equal");

        // The replica is resynced: it ends with the primary's bytes and version.
        await _eventually.UntilAsync(async () =>
        {
            if (!Eventually.Healthy(await fixture.Management.GetMapAsync()))
            {
                return false;
            }
            var (v, b) = await HeldByAsync(segment, primary, replica);
            return v[0] == v[1] && v[0] != SegmentVersions.Unknown && b[0].AsSpan().SequenceEqual(b[1]);
        }, $"'{replica}' resynced to the primary's segment 0", TimeSpan.FromSeconds(60));
        await fixture.Client.DeleteVolumeAsync(name);
    }

    [SkippableFact]
    public async Task A_refused_write_that_the_client_sends_again_makes_the_replica_whole_with_no_resync()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.Healthy, "a healthy cluster before the test");
        var name = "retried-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var map = await MapAtRestAsync();
        var volume = map.FindVolume(name)!;
        var (primary, replica) = (volume.PlacementGroupOf(0).Replicas[0], volume.PlacementGroupOf(0).Replicas[1]);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        var refusedBytes = Replicas.RandomBytes(Chunk, seed: 44);

        fixture.ReplicaFaults.FaultNext(replica, 1, ReplicaWriteFault.RefuseAsStale);
        await Assert.ThrowsAnyAsync<StorageException>(() => fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, refusedBytes, false)));
        // What a client does after a stale epoch: the same write again (it rewrites every byte the replica missed).
        await WriteOnPrimaryAsync(primary, segment, 0, refusedBytes);

        var (versions, bytes) = await HeldByAsync(segment, primary, replica);
        output.WriteLine($"after the retry: '{primary}' at {Describe(versions[0])}, '{replica}' at {Describe(versions[1])}");
        Assert.True(versions[0] == versions[1] && versions[1] != SegmentVersions.Unknown, $"'{replica}' at {Describe(versions[1])}, the primary at {Describe(versions[0])}: the retry made it whole, it needs no resync");
        Assert.True(bytes[0].AsSpan().SequenceEqual(bytes[1]), $"'{replica}' differs from the primary after the retry");
        Assert.Equal(map.Epoch, (await fixture.Management.GetMapAsync()).Epoch); // no resync was asked for
        await fixture.Client.DeleteVolumeAsync(name);
    }

    [SkippableFact]
    public async Task A_replica_filled_while_its_segments_are_written_and_snapshotted_ends_with_the_primarys_versions_and_copies()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.Healthy, "a healthy cluster before the test");
        var name = "filled-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 2L * StorageClusterFixture.PlacementGroups * Segment, 2);
        var map = await MapAtRestAsync();
        var volume = map.FindVolume(name)!;
        var group = volume.PlacementGroupOf(0);
        var (primary, replica) = (group.Replicas[0], group.Replicas[1]);
        // Group 0 holds segments 0 and 16: the fill goes over 0, then waits before 16.
        var first = new SegmentAddress(volume.VolumeId, 0);
        var second = new SegmentAddress(volume.VolumeId, StorageClusterFixture.PlacementGroups);
        var handle = await fixture.Client.OpenVolumeAsync(name);
        await handle.WriteAsync(0, Replicas.RandomBytes(Chunk, seed: 51));
        await handle.WriteAsync(second.SegmentIndex * Segment, Replicas.RandomBytes(Chunk, seed: 52));
        output.WriteLine($"epoch {map.Epoch}: group 0 on '{primary}' (primary) and '{replica}'");

        var held = fixture.ReplicaFaults.HoldFill(primary, second);
        try
        {
            // Resynced while it holds every write: its versions equal the primary's, nothing to copy.
            await fixture.Management.ReportReplicaFailedAsync(new ReplicaFailure(volume.VolumeId, group.Index, replica, primary, "the test has it resynced", map.Epoch));
            await held.WaitAsync(TimeSpan.FromSeconds(60));
            output.WriteLine($"the fill of '{replica}' went over segment 0 and waits before segment {second.SegmentIndex}");
            // Written after the fill went over the segment, then a snapshot, then the write that preserves the segment for it.
            await handle.WriteAsync(Chunk, Replicas.RandomBytes(Chunk, seed: 53));
            await fixture.Client.CreateSnapshotAsync(name, "s");
            await handle.WriteAsync(2 * Chunk, Replicas.RandomBytes(Chunk, seed: 54));
        }
        finally
        {
            fixture.ReplicaFaults.ReleaseFill(primary, second);
        }
        var filled = await _eventually.MapAsync(() => fixture.Management.GetMapAsync(),
            m => Eventually.Healthy(m) && m.FindVolume(name)!.PlacementGroupOf(0).Replicas.Contains(replica), $"'{replica}' filled and acting again");

        var problems = new List<string>();
        var epoch = filled.Epoch;
        var heads = new[] { await fixture.Server(primary).GetSegmentVersionAsync(epoch, first), await fixture.Server(replica).GetSegmentVersionAsync(epoch, first) };
        if (heads[0] != heads[1])
        {
            problems.Add($"segment 0: '{primary}' at version {Describe(heads[0])}, the filled '{replica}' at {Describe(heads[1])}");
        }
        var snapshot = filled.FindVolume(name)!.Snapshots.Single();
        var copy = new SegmentAddress(snapshot.SnapshotId, 0);
        var copies = new[] { await fixture.Server(primary).GetSegmentVersionAsync(epoch, copy), await fixture.Server(replica).GetSegmentVersionAsync(epoch, copy) };
        if (copies[0] != copies[1] || copies[1] == SegmentVersions.Unknown)
        {
            problems.Add($"segment 0's copy for {name}@s: '{primary}' at version {Describe(copies[0])}, the filled '{replica}' at {Describe(copies[1])}");
        }
        Assert.True(problems.Count == 0, string.Join("; ", problems));
        await Replicas.AssertSnapshotCopiesIdenticalAsync(fixture, filled.FindVolume(name)!);
        await Replicas.AssertIdenticalAsync(fixture, filled.FindVolume(name)!, 0, Segment);
        await fixture.Client.DeleteVolumeAsync(name, withSnapshots: true);
    }

    [SkippableFact]
    public async Task A_write_refused_twice_by_a_replica_keeps_its_first_miss_through_the_retry_of_the_second()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.Healthy, "healthy");
        var name = "rev45-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var map = await MapAtRestAsync();
        var volume = map.FindVolume(name)!;
        var (primary, replica) = (volume.PlacementGroupOf(0).Replicas[0], volume.PlacementGroupOf(0).Replicas[1]);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        await fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 1), false));

        fixture.ReplicaFaults.FaultNext(replica, 2, ReplicaWriteFault.RefuseAsStale);
        // W1 at [0, 64K): refused on the replica (record: [0,64K)).
        await Assert.ThrowsAnyAsync<StorageException>(() => fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 2), false)));
        // W2 at [128K, 192K): carries -1, refused too; the catch re-adds only [128K,192K).
        await Assert.ThrowsAnyAsync<StorageException>(() => fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 2 * Chunk, Replicas.RandomBytes(Chunk, seed: 3), false)));
        Assert.Equal(0, fixture.ReplicaFaults.Remaining(replica));
        // The client's retry of W2 covers the (shrunk) record: carries the real version.
        await fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 2 * Chunk, Replicas.RandomBytes(Chunk, seed: 3), false));

        var v0 = await fixture.Server(primary).GetSegmentVersionAsync(map.Epoch, segment);
        var v1 = await fixture.Server(replica).GetSegmentVersionAsync(map.Epoch, segment);
        var b0 = (await fixture.Server(primary).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        var b1 = (await fixture.Server(replica).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        output.WriteLine($"primary {v0:x}, replica {v1:x}, bytes equal: {b0.AsSpan().SequenceEqual(b1)}");
        Assert.False(v0 == v1 && !b0.AsSpan().SequenceEqual(b1), $"both at {v0:x}, bytes differ (replica lacks W1)");
    }

    [SkippableFact]
    public async Task A_primary_deactivated_between_a_miss_and_the_next_write_has_the_replica_resynced()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.Healthy, "healthy");
        var name = "rev45d-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 2);
        var map = await MapAtRestAsync();
        var volume = map.FindVolume(name)!;
        var (primary, replica) = (volume.PlacementGroupOf(0).Replicas[0], volume.PlacementGroupOf(0).Replicas[1]);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        await fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 1), false));
        fixture.ReplicaFaults.FaultNext(replica, 1, ReplicaWriteFault.RefuseAsStale);
        await Assert.ThrowsAnyAsync<StorageException>(() => fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 2), false)));
        // Orleans deactivates the grain (idle collection, its directory silo died, ...): no crash, same epoch.
        await fixture.Server(primary).AsReference<Orleans.Core.Internal.IGrainManagementExtension>().DeactivateOnIdle();
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                map = await fixture.Management.GetMapAsync();
                await fixture.Server(primary).WriteAsync(new SegmentWrite(map.Epoch, segment, 2 * Chunk, Replicas.RandomBytes(Chunk, seed: 3), false));
                break;
            }
            catch (Exception ex) when (attempt < 20)
            {
                output.WriteLine($"attempt {attempt}: {ex.GetType().Name}: {ex.Message}");
                await Task.Delay(1000);
            }
        }
        var v0 = await fixture.Server(primary).GetSegmentVersionAsync(map.Epoch, segment);
        var v1 = await fixture.Server(replica).GetSegmentVersionAsync(map.Epoch, segment);
        var b0 = (await fixture.Server(primary).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        var b1 = (await fixture.Server(replica).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        output.WriteLine($"epoch {map.Epoch}: primary {v0:x}, replica {v1:x}, bytes equal: {b0.AsSpan().SequenceEqual(b1)}");
        Assert.False(v0 == v1 && !b0.AsSpan().SequenceEqual(b1), $"both at {v0:x}, bytes differ (replica lacks W1)");
    }

    [SkippableFact]
    public async Task A_replica_that_refused_a_write_another_applied_is_never_at_its_version_after_a_failover()
    {
        fixture.SkipIfUnavailable();
        await _eventually.MapAsync(() => fixture.Management.GetMapAsync(), Eventually.Healthy, "healthy");
        var name = "rev45c-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 3);
        var map = await MapAtRestAsync();
        var volume = map.FindVolume(name)!;
        var g = volume.PlacementGroupOf(0);
        var (p, q, r) = (g.Replicas[0], g.Replicas[1], g.Replicas[2]);
        var segment = new SegmentAddress(volume.VolumeId, 0);
        await fixture.Server(p).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 1), false));
        output.WriteLine($"epoch {map.Epoch}: {p} primary, {q}, {r}");

        var held = fixture.ReplicaFaults.Hold(r, segment);
        var write = fixture.Server(p).WriteAsync(new SegmentWrite(map.Epoch, segment, 0, Replicas.RandomBytes(Chunk, seed: 2), false));
        await held.WaitAsync(TimeSpan.FromSeconds(30));
        await fixture.Management.HostFailedAsync(p, "the test");
        var moved = await _eventually.MapAsync(() => fixture.Management.GetMapAsync(),
            m => m.FindVolume(name)!.PlacementGroupOf(0).Replicas is var rs && !rs.Contains(p) && rs[0] == q, "q primary");
        await fixture.Server(r).GetSegmentVersionAsync(moved.Epoch, segment); // r adopts the new map
        await fixture.Server(q).GetSegmentVersionAsync(moved.Epoch, segment);
        fixture.ReplicaFaults.Release(r, segment);
        var failed = await Record.ExceptionAsync(() => write);
        output.WriteLine($"W1: {failed?.GetType().Name}: {failed?.Message}");
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                map = await fixture.Management.GetMapAsync();
                var lead = map.FindVolume(name)!.PlacementGroupOf(0).Replicas[0];
                await fixture.Server(lead).WriteAsync(new SegmentWrite(map.Epoch, segment, 2 * Chunk, Replicas.RandomBytes(Chunk, seed: 3), false));
                output.WriteLine($"W2 through {lead} at epoch {map.Epoch}");
                break;
            }
            catch (Exception ex) when (attempt < 30)
            {
                output.WriteLine($"attempt {attempt}: {ex.GetType().Name}: {ex.Message}");
                await Task.Delay(1000);
            }
        }
        map = await fixture.Management.GetMapAsync();
        var v0 = await fixture.Server(q).GetSegmentVersionAsync(map.Epoch, segment);
        var v1 = await fixture.Server(r).GetSegmentVersionAsync(map.Epoch, segment);
        var b0 = (await fixture.Server(q).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        var b1 = (await fixture.Server(r).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
        output.WriteLine($"epoch {map.Epoch}: q {v0:x}, r {v1:x}, bytes equal: {b0.AsSpan().SequenceEqual(b1)}; group {string.Join(",", map.FindVolume(name)!.PlacementGroupOf(0).Replicas)}");
        Assert.False(v0 == v1 && !b0.AsSpan().SequenceEqual(b1), $"both at {v0:x}, bytes differ");
    }

    /// <summary>A write straight to the primary at its current epoch (the map may move meanwhile: a replica is being resynced).</summary>
    private async Task WriteOnPrimaryAsync(string primary, SegmentAddress segment, int offset, byte[] data)
    {
        for (var attempt = 1; ; attempt++)
        {
            var epoch = (await fixture.Management.GetMapAsync()).Epoch;
            try
            {
                await fixture.Server(primary).WriteAsync(new SegmentWrite(epoch, segment, offset, data, false));
                return;
            }
            catch (StaleEpochException) when (attempt < 5)
            {
            }
        }
    }

    /// <summary>The segment's version and bytes on each host, read at one epoch.</summary>
    private async Task<(long[] Versions, byte[][] Bytes)> HeldByAsync(SegmentAddress segment, params string[] hosts)
    {
        for (var attempt = 1; ; attempt++)
        {
            var epoch = (await fixture.Management.GetMapAsync()).Epoch;
            try
            {
                var versions = new long[hosts.Length];
                var bytes = new byte[hosts.Length][];
                for (var i = 0; i < hosts.Length; i++)
                {
                    versions[i] = await fixture.Server(hosts[i]).GetSegmentVersionAsync(epoch, segment);
                    bytes[i] = (await fixture.Server(hosts[i]).ReadLocalAsync(segment, 0, Segment)).Bytes.ToArray();
                }
                return (versions, bytes);
            }
            catch (StaleEpochException) when (attempt < 5)
            {
            }
        }
    }

    private static string Describe(long version) =>
        version == SegmentVersions.Unknown ? "unknown" : version == SnapshotCopyVersions.NoCopy ? "(no copy)" : $"{version >> SegmentVersions.EpochShift}.{version & 0xffffffff}";

    /// <summary>Primary balancing may still reorder a new volume's groups: the map once it stopped moving.</summary>
    private async Task<ClusterMap> MapAtRestAsync()
    {
        var atRest = await fixture.Management.GetMapAsync();
        await _eventually.UntilAsync(async () =>
        {
            await Task.Delay(1500);
            var again = await fixture.Management.GetMapAsync();
            (var unchanged, atRest) = (again.Epoch == atRest.Epoch, again);
            return unchanged;
        }, "the map at rest");
        return atRest;
    }
}
