using OrleansStorage.Client.Library;
using OrleansStorage.Errors;
using OrleansStorage.Maps;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// Snapshots through the client library: what a snapshot reads, copy-on-write on every replica,
/// deleting snapshots in any order, diff and rollback, and the refusals.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class SnapshotTests(StorageClusterFixture fixture, ITestOutputHelper output)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task A_snapshot_reads_the_volume_as_it_was_and_every_replica_copies_the_same_bytes()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("snap-basic", 24L * Segment, 2);
        var volume = await fixture.Client.OpenVolumeAsync("snap-basic");
        var before = Replicas.RandomBytes(10 * Segment, seed: 11);
        await volume.WriteAsync(0, before);

        await fixture.Client.CreateSnapshotAsync("snap-basic", "s1");
        // Over part of what was written, and into segments never written before the snapshot.
        var after = Replicas.RandomBytes(8 * Segment, seed: 12);
        await volume.WriteAsync(6 * Segment + 100, after);

        var snapshot = await fixture.Client.OpenVolumeAsync("snap-basic@s1");
        Assert.True(snapshot.IsReadOnly);
        var expected = new byte[24 * Segment];
        before.CopyTo(expected, 0);
        var read = new byte[expected.Length];
        await snapshot.ReadAsync(0, read);
        Assert.True(expected.AsSpan().SequenceEqual(read), "the snapshot does not hold the volume as it was");

        var now = (byte[])expected.Clone();
        after.CopyTo(now, 6 * Segment + 100);
        await volume.ReadAsync(0, read);
        Assert.True(now.AsSpan().SequenceEqual(read), "the volume lost a write made after the snapshot");

        var map = await fixture.Management.GetMapAsync();
        var info = map.FindVolume("snap-basic")!;
        await Replicas.AssertSnapshotCopiesIdenticalAsync(fixture, info);
        // Only segments written after the snapshot were copied; the never-written ones are empty copies.
        var copied = 0L;
        foreach (var group in info.PlacementGroups)
        {
            var versions = await fixture.Server(group.Primary).GetSnapshotCopyVersionsAsync(map.Epoch, info.VolumeId, group.Index);
            copied += versions.Single().Versions.Count(v => v != SnapshotCopyVersions.NoCopy);
        }
        Assert.Equal(9, copied); // segments 6..14 were written after it
    }

    [SkippableFact]
    public async Task Snapshots_deleted_in_any_order_leave_the_others_whole_and_free_their_space()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("snap-chain", 16L * Segment, 2);
        var volume = await fixture.Client.OpenVolumeAsync("snap-chain");
        var images = new List<byte[]>();
        var image = new byte[16 * Segment];
        for (var i = 0; i < 4; i++)
        {
            // Each round rewrites a different part, so each snapshot depends on later ones' copies.
            var data = Replicas.RandomBytes(3 * Segment, seed: 100 + i);
            var at = (i * 3 * Segment) + (i * 4096);
            await volume.WriteAsync(at, data);
            data.CopyTo(image, at);
            images.Add((byte[])image.Clone());
            await fixture.Client.CreateSnapshotAsync("snap-chain", $"r{i}");
        }
        await volume.WriteAsync(0, Replicas.RandomBytes(16 * Segment, seed: 200));

        await fixture.Client.DeleteSnapshotAsync("snap-chain", "r1");
        await AssertSnapshotHoldsAsync("snap-chain@r0", images[0]);
        await AssertSnapshotHoldsAsync("snap-chain@r2", images[2]);
        await fixture.Client.DeleteSnapshotAsync("snap-chain", "r3");
        await fixture.Client.DeleteSnapshotAsync("snap-chain", "r0");
        await AssertSnapshotHoldsAsync("snap-chain@r2", images[2]);
        await Assert.ThrowsAsync<SnapshotNotFoundException>(() => fixture.Client.OpenVolumeAsync("snap-chain@r1"));

        var info = (await fixture.Management.GetMapAsync()).FindVolume("snap-chain")!;
        await Replicas.AssertSnapshotCopiesIdenticalAsync(fixture, info);
        var usage = await fixture.Client.ListSnapshotsAsync("snap-chain");
        Assert.Equal("r2", Assert.Single(usage).Snapshot.Name);
        Assert.True(usage[0].ExclusiveBytes >= 16L * Segment / 2, $"r2 alone holds {usage[0].ExclusiveBytes} bytes; every segment was rewritten after it");

        // The last one gone, no host keeps a byte for any snapshot of the volume.
        await fixture.Client.DeleteSnapshotAsync("snap-chain", "r2");
        var hosts = info.PlacementGroups.SelectMany(pg => pg.Replicas).Distinct().ToList();
        List<string> left = [];
        await new Eventually(output).UntilAsync(() =>
        {
            left = [.. hosts.SelectMany(host => Directory.EnumerateFiles(Path.Combine(fixture.DataDirectoryOf(host), "volumes"), SegmentStoreOwnerFile, SearchOption.AllDirectories))];
            return Task.FromResult(left.Count == 0);
        }, "every host dropped the volume's snapshot copies", TimeSpan.FromSeconds(20), () => string.Join(", ", left));
    }

    [SkippableFact]
    public async Task Diff_names_the_changed_segments_and_rollback_restores_the_snapshot()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("snap-diff", 20L * Segment, 1);
        var volume = await fixture.Client.OpenVolumeAsync("snap-diff");
        var original = Replicas.RandomBytes(12 * Segment, seed: 31);
        await volume.WriteAsync(0, original);
        await fixture.Client.CreateSnapshotAsync("snap-diff", "base");
        await volume.WriteAsync(2 * Segment + 5, Replicas.RandomBytes(10, seed: 32));
        await volume.WriteAsync(15 * Segment, Replicas.RandomBytes(2 * Segment, seed: 33));
        await volume.TrimAsync(7 * Segment, Segment);
        await fixture.Client.CreateSnapshotAsync("snap-diff", "later");
        await volume.WriteAsync(9 * Segment, Replicas.RandomBytes(100, seed: 34));

        var changed = await fixture.Client.DiffAsync("snap-diff", "base", "later");
        Assert.Equal([(2L * Segment, (long)Segment), (7L * Segment, (long)Segment), (15L * Segment, 2L * Segment)], changed);
        var toNow = await fixture.Client.DiffAsync("snap-diff", "base");
        Assert.Equal([(2L * Segment, (long)Segment), (7L * Segment, (long)Segment), (9L * Segment, (long)Segment), (15L * Segment, 2L * Segment)], toNow);
        Assert.Empty(await fixture.Client.DiffAsync("snap-diff", "later", "later"));

        var rewritten = await fixture.Client.RollbackAsync("snap-diff", "base");
        Assert.Equal(5L * Segment, rewritten);
        var expected = new byte[20 * Segment];
        original.CopyTo(expected, 0);
        var read = new byte[expected.Length];
        await volume.ReadAsync(0, read);
        Assert.True(expected.AsSpan().SequenceEqual(read), "the rollback did not restore the snapshot");
        // The holes of the snapshot are holes again, not written zeros.
        Assert.Equal([(0L, 12L * Segment)], await volume.GetAllocationAsync(0, 20 * Segment));
        await AssertSnapshotHoldsAsync("snap-diff@later", null); // still readable after the rollback wrote over its segments
    }

    [SkippableFact]
    public async Task Bad_snapshot_requests_get_one_clear_error_and_change_nothing()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("snap-bad", 4L * Segment, 1);
        await fixture.Client.CreateSnapshotAsync("snap-bad", "one");
        var epoch = (await fixture.Management.GetMapAsync()).Epoch;

        await AssertRefusedAsync(() => fixture.Client.CreateSnapshotAsync("snap-missing", "x"), "no volume named 'snap-missing'");
        await AssertRefusedAsync(() => fixture.Client.CreateSnapshotAsync("snap-bad", "one"), "already has a snapshot named 'one'");
        await AssertRefusedAsync(() => fixture.Client.CreateSnapshotAsync("snap-bad", "a@b"), "snapshot name 'a@b' is not allowed");
        await AssertRefusedAsync(() => fixture.Client.CreateSnapshotAsync("snap-bad", ""), "must not be empty");
        await AssertRefusedAsync(() => fixture.Client.DeleteSnapshotAsync("snap-bad", "two"), "has no snapshot named 'two'");
        await AssertRefusedAsync(() => fixture.Client.OpenVolumeAsync("snap-bad@two"), "has no snapshot named 'two'");
        var snapshot = await fixture.Client.OpenVolumeAsync("snap-bad@one");
        await AssertRefusedAsync(() => snapshot.WriteAsync(0, new byte[4096]), "a snapshot is read-only");
        await AssertRefusedAsync(() => snapshot.TrimAsync(0, 4096), "a snapshot is read-only");
        await AssertRefusedAsync(() => snapshot.ReadAsync(4L * Segment, new byte[1]), "outside snapshot 'snap-bad@one'");
        // As rbd rm refuses an image with snapshots: they would go with it, unasked.
        await AssertRefusedAsync(() => fixture.Client.DeleteVolumeAsync("snap-bad"),
            "volume 'snap-bad' has 1 snapshot (one): delete them first, or delete the volume with its snapshots (--with-snapshots)");
        await (await fixture.Client.OpenVolumeAsync("snap-bad@one")).ReadAsync(0, new byte[4096]);
        Assert.Equal(epoch, (await fixture.Management.GetMapAsync()).Epoch);
        await fixture.Client.DeleteVolumeAsync("snap-bad", withSnapshots: true);
    }

    [SkippableFact]
    public async Task A_clone_reads_through_copies_up_on_first_write_and_flattens_online()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("clone-src", 12L * Segment, 2);
        var source = await fixture.Client.OpenVolumeAsync("clone-src");
        var original = Replicas.RandomBytes(9 * Segment, seed: 41);
        await source.WriteAsync(0, original);
        await fixture.Client.CreateSnapshotAsync("clone-src", "gold");
        await source.WriteAsync(0, Replicas.RandomBytes(Segment, seed: 42)); // the source moves on; the snapshot does not

        var cloneInfo = await fixture.Client.CloneVolumeAsync("clone-src@gold", "clone-a", 3);
        Assert.Equal(12L * Segment, cloneInfo.SizeBytes);
        Assert.Equal(3, cloneInfo.ReplicationFactor);
        var clone = await fixture.Client.OpenVolumeAsync("clone-a");
        var expected = new byte[12 * Segment];
        original.CopyTo(expected, 0);
        var read = new byte[expected.Length];
        await clone.ReadAsync(0, read);
        Assert.True(expected.AsSpan().SequenceEqual(read), "a fresh clone does not read as its snapshot");
        Assert.Equal([(0L, 9L * Segment)], await clone.GetAllocationAsync(0, 12 * Segment));

        // A small write copies its segment up first: the rest of that segment still holds the snapshot's bytes.
        var patch = Replicas.RandomBytes(5000, seed: 43);
        await clone.WriteAsync((3L * Segment) + 100, patch);
        await clone.TrimAsync(5L * Segment, Segment);
        patch.CopyTo(expected, (3 * Segment) + 100);
        Array.Clear(expected, 5 * Segment, Segment);
        await clone.ReadAsync(0, read);
        Assert.True(expected.AsSpan().SequenceEqual(read), "the clone lost its own writes or the snapshot's bytes around them");
        await AssertSnapshotHoldsAsync("clone-src@gold", [.. original, .. new byte[3 * Segment]]);
        var cloneMap = (await fixture.Management.GetMapAsync()).FindVolume("clone-a")!;
        await Replicas.AssertAllHoldAsync(fixture, cloneMap, 3L * Segment, expected.AsMemory(3 * Segment, Segment));

        // The snapshot cannot go while the clone reads through to it, nor can its volume.
        await AssertRefusedAsync(() => fixture.Client.DeleteSnapshotAsync("clone-src", "gold"), "has clones that read through to it: clone-a");
        await AssertRefusedAsync(() => fixture.Client.DeleteVolumeAsync("clone-src"), "has clones that read through to its snapshots: clone-a");

        // A snapshot of the clone, then flatten: the clone and its snapshot keep their bytes without the parent.
        await fixture.Client.CreateSnapshotAsync("clone-a", "c1");
        var copied = await fixture.Client.FlattenAsync("clone-a");
        Assert.Equal(12 - 2, copied); // segments 3 and 5 were copied up by the write and the trim
        Assert.Null((await fixture.Management.GetMapAsync()).FindVolume("clone-a")!.Parent);
        await fixture.Client.DeleteSnapshotAsync("clone-src", "gold");
        await fixture.Client.DeleteVolumeAsync("clone-src");
        await clone.ReadAsync(0, read);
        Assert.True(expected.AsSpan().SequenceEqual(read), "the flattened clone changed");
        await AssertSnapshotHoldsAsync("clone-a@c1", expected);
        await fixture.Client.DeleteVolumeAsync("clone-a", withSnapshots: true);
    }

    [SkippableFact]
    public async Task Bad_clone_requests_get_one_clear_error_and_change_nothing()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("clone-bad", 4L * Segment, 1);
        await fixture.Client.CreateSnapshotAsync("clone-bad", "s");
        var epoch = (await fixture.Management.GetMapAsync()).Epoch;
        await AssertRefusedAsync(() => fixture.Client.CloneVolumeAsync("clone-bad", "x", 1), "names no snapshot");
        await AssertRefusedAsync(() => fixture.Client.CloneVolumeAsync("clone-bad@nope", "x", 1), "has no snapshot named 'nope'");
        await AssertRefusedAsync(() => fixture.Client.CloneVolumeAsync("clone-bad@s", "clone-bad", 1), "a volume named 'clone-bad' already exists");
        await AssertRefusedAsync(() => fixture.Client.CloneVolumeAsync("clone-bad@s", "x", 4), "replication factor 4 is out of range");
        await AssertRefusedAsync(() => fixture.Client.FlattenAsync("clone-bad"), "is not a clone");
        Assert.Equal(epoch, (await fixture.Management.GetMapAsync()).Epoch);
        await fixture.Client.DeleteVolumeAsync("clone-bad", withSnapshots: true);
    }

    [SkippableFact]
    public async Task A_hundred_snapshots_of_a_volume_changed_one_percent_between_each_hold_one_percent_each_and_free_it_on_delete()
    {
        fixture.SkipIfUnavailable();
        const int Segments = 1024; // 1 GiB of 1 MiB segments
        const int ChangedPerRound = 10; // 1 %
        await fixture.Client.CreateVolumeAsync("snap-space", (long)Segments * Segment, 1);
        var volume = await fixture.Client.OpenVolumeAsync("snap-space");
        var data = Replicas.RandomBytes(4 * Segment, seed: 71);
        for (var at = 0L; at < Segments; at += 4)
        {
            await volume.WriteAsync(at * Segment, data);
        }
        var random = new Random(72);
        for (var round = 0; round < 100; round++)
        {
            await fixture.Client.CreateSnapshotAsync("snap-space", $"s{round:D3}");
            foreach (var segment in Enumerable.Range(0, Segments).OrderBy(_ => random.Next()).Take(ChangedPerRound))
            {
                await volume.WriteAsync((long)segment * Segment, data.AsMemory(round % 4 * Segment, Segment));
            }
        }

        var info = (await fixture.Management.GetMapAsync()).FindVolume("snap-space")!;
        var sizes = info.Snapshots.Select(s => SnapshotBytesOnHosts(info, s.SnapshotId)).ToList();
        output.WriteLine($"100 snapshots of 1 GiB, 1 % changed between each: per snapshot min {sizes.Min() / 1048576.0:0.0} MiB, max {sizes.Max() / 1048576.0:0.0} MiB, all {sizes.Sum() / 1048576.0:0.0} MiB");
        Assert.All(sizes, bytes => Assert.InRange(bytes, ChangedPerRound * (long)Segment * 9 / 10, ChangedPerRound * (long)Segment * 11 / 10));

        foreach (var snapshot in info.Snapshots)
        {
            await fixture.Client.DeleteSnapshotAsync("snap-space", snapshot.Name);
        }
        long left = -1;
        await new Eventually(output).UntilAsync(
            () => Task.FromResult((left = info.Snapshots.Sum(s => SnapshotBytesOnHosts(info, s.SnapshotId))) == 0),
            "every snapshot's copies freed", TimeSpan.FromSeconds(60), () => $"{left} bytes left");
        await fixture.Client.DeleteVolumeAsync("snap-space", withSnapshots: true);
    }

    /// <summary>What a snapshot's own copies take on the disks of the volume's hosts (allocated blocks of their segment files).</summary>
    private long SnapshotBytesOnHosts(VolumeInfo volume, Guid snapshotId)
    {
        long bytes = 0;
        foreach (var host in volume.PlacementGroups.SelectMany(pg => pg.Replicas).Distinct())
        {
            var directory = Path.Combine(fixture.DataDirectoryOf(host), "volumes", snapshotId.ToString("N"));
            if (Directory.Exists(directory))
            {
                bytes += Directory.EnumerateFiles(directory, "*.seg").Sum(file => AllocatedBytes(file));
            }
        }
        return bytes;
    }

    private static long AllocatedBytes(string path) =>
        long.Parse(ExternalProgram.RunAsync("stat", ["-c", "%b", path]).GetAwaiter().GetResult().Stdout.Trim()) * 512;

    [SkippableFact]
    public async Task Verify_checks_every_replicas_snapshot_copies_and_repair_rewrites_a_bad_one()
    {
        fixture.SkipIfUnavailable();
        await fixture.Client.CreateVolumeAsync("snap-verify", 4L * Segment, 2);
        var volume = await fixture.Client.OpenVolumeAsync("snap-verify");
        var original = Replicas.RandomBytes(4 * Segment, seed: 81);
        await volume.WriteAsync(0, original);
        var snapshot = await fixture.Client.CreateSnapshotAsync("snap-verify", "v");
        await volume.WriteAsync(0, Replicas.RandomBytes(4 * Segment, seed: 82)); // every segment copied for it
        Assert.Empty((await volume.ScrubAsync(repair: false)).Problems);

        // One bit flipped in a replica's copy of segment 1, behind its storage server's back.
        var group = volume.Info.PlacementGroupOf(1);
        var path = Path.Combine(fixture.DataDirectoryOf(group.Replicas[1]), "volumes", snapshot.SnapshotId.ToString("N"), "0000000001.seg");
        await using (var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            file.Position = 12345;
            var b = file.ReadByte();
            file.Position = 12345;
            file.WriteByte((byte)(b ^ 0x10));
        }
        var found = await volume.ScrubAsync(repair: false);
        Assert.Contains(found.Problems, p => p.Contains("snapshot 'v'", StringComparison.Ordinal) && p.Contains(group.Replicas[1], StringComparison.Ordinal));
        var repaired = await volume.ScrubAsync(repair: true);
        Assert.True(repaired.BlocksRepaired >= 1, string.Join("; ", repaired.Problems));
        Assert.Empty((await volume.ScrubAsync(repair: false)).Problems);
        await AssertSnapshotHoldsAsync("snap-verify@v", original);
        await fixture.Client.DeleteVolumeAsync("snap-verify", withSnapshots: true);
    }

    private const string SegmentStoreOwnerFile = Segments.SegmentStore.SnapshotOwnerFileName;

    private static async Task AssertRefusedAsync(Func<Task> action, string expected)
    {
        var error = await Assert.ThrowsAnyAsync<StorageException>(action);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    /// <summary>Reads the whole snapshot; with <paramref name="expected"/> null, only that it reads.</summary>
    private async Task AssertSnapshotHoldsAsync(string name, byte[]? expected)
    {
        var snapshot = await fixture.Client.OpenVolumeAsync(name);
        var read = new byte[snapshot.SizeBytes];
        await snapshot.ReadAsync(0, read);
        if (expected is not null)
        {
            Assert.True(expected.AsSpan().SequenceEqual(read), $"{name} does not hold what the volume held when it was taken");
        }
    }
}
