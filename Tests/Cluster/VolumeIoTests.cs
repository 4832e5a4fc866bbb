using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

[Collection(StorageClusterCollection.Name)]
public sealed class VolumeIoTests(StorageClusterFixture fixture)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableTheory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Random_data_round_trips_across_segment_and_placement_group_boundaries(int factor)
    {
        fixture.SkipIfUnavailable();
        var name = $"roundtrip-{factor}-{Guid.NewGuid():N}"[..24];
        var info = await fixture.Client.CreateVolumeAsync(name, 40L * Segment, factor);
        Assert.Equal(StorageClusterFixture.PlacementGroups, info.PlacementGroups.Length);
        var volume = await fixture.Client.OpenVolumeAsync(name);

        // Starts mid-segment and spans 20 segments, so it crosses segment boundaries and wraps
        // around all 16 placement groups.
        var offset = 3L * Segment + 12345;
        var data = Replicas.RandomBytes(20 * Segment, seed: factor);
        await volume.WriteAsync(offset, data);

        var back = new byte[data.Length];
        await volume.ReadAsync(offset, back);
        Assert.True(data.AsSpan().SequenceEqual(back), "read-back differs from what was written");
        await Replicas.AssertAllHoldAsync(fixture, volume.Info, offset, data);

        // Never-written ranges read as zeros, before and after the written range.
        var head = new byte[12345];
        await volume.ReadAsync(3L * Segment, head);
        Assert.All(head, b => Assert.Equal(0, b));
        var tail = new byte[Segment];
        await volume.ReadAsync(39L * Segment, tail);
        Assert.All(tail, b => Assert.Equal(0, b));
    }

    [SkippableFact]
    public async Task Trim_makes_a_range_read_as_zeros_on_every_replica()
    {
        fixture.SkipIfUnavailable();
        var name = "trim-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 8L * Segment, 2);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        var data = Replicas.RandomBytes(4 * Segment, seed: 7);
        await volume.WriteAsync(0, data);

        await volume.TrimAsync(Segment / 2, 2L * Segment);
        Array.Clear(data, Segment / 2, 2 * Segment);

        var back = new byte[data.Length];
        await volume.ReadAsync(0, back);
        Assert.True(data.AsSpan().SequenceEqual(back));
        await Replicas.AssertAllHoldAsync(fixture, volume.Info, 0, data);
    }

    [SkippableFact]
    public async Task Flush_and_force_unit_access_writes_succeed_on_all_replicas()
    {
        fixture.SkipIfUnavailable();
        var name = "flush-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 3);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        var data = Replicas.RandomBytes(Segment + 100, seed: 11);
        await volume.WriteAsync(100, data, forceUnitAccess: true);
        await volume.FlushAsync();
        await Replicas.AssertAllHoldAsync(fixture, volume.Info, 100, data);
    }

    [SkippableFact]
    public async Task Concurrent_overlapping_writes_leave_all_replicas_identical()
    {
        fixture.SkipIfUnavailable();
        var name = "overlap-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 3);
        var volume = await fixture.Client.OpenVolumeAsync(name);

        // 200 writes of 4-64 KiB, all inside the first two segments, each filled with its own
        // byte value, so any two overlapping ones would leave different bytes if replicas
        // applied them in different orders.
        var random = new Random(42);
        var writes = Enumerable.Range(0, 200).Select(i =>
        {
            var length = random.Next(4096, 65536);
            var offset = (long)random.Next(0, 2 * Segment - length);
            var payload = new byte[length];
            Array.Fill(payload, (byte)(i % 251 + 1));
            return (offset, payload);
        }).ToList();
        await Task.WhenAll(writes.Select(w => volume.WriteAsync(w.offset, w.payload)));

        await Replicas.AssertIdenticalAsync(fixture, volume.Info, 0, 2L * Segment);
        // And what the primary serves is what the replicas hold: every written byte is some write's value.
        var back = new byte[2 * Segment];
        await volume.ReadAsync(0, back);
        foreach (var (offset, payload) in writes)
        {
            Assert.DoesNotContain((byte)0, back.AsSpan((int)offset, payload.Length).ToArray());
        }
    }

    [SkippableFact]
    public async Task Resize_grows_the_volume_and_the_new_range_is_usable()
    {
        fixture.SkipIfUnavailable();
        var name = "grow-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 2L * Segment, 2);
        var epoch = fixture.Client.Maps.Current.Epoch;
        await fixture.Client.ResizeVolumeAsync(name, 6L * Segment);
        Assert.Equal(epoch + 1, fixture.Client.Maps.Current.Epoch);

        var volume = await fixture.Client.OpenVolumeAsync(name);
        var data = Replicas.RandomBytes(Segment, seed: 5);
        await volume.WriteAsync(5L * Segment, data);
        var back = new byte[Segment];
        await volume.ReadAsync(5L * Segment, back);
        Assert.True(data.AsSpan().SequenceEqual(back));
    }

    [SkippableFact]
    public async Task Delete_removes_the_segment_files_from_every_host()
    {
        fixture.SkipIfUnavailable();
        var name = "delete-" + Guid.NewGuid().ToString("N")[..12];
        var info = await fixture.Client.CreateVolumeAsync(name, 16L * Segment, 3);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        await volume.WriteAsync(0, Replicas.RandomBytes(16 * Segment, seed: 3));
        var directories = fixture.Client.Maps.Current.Hosts
            .Select(h => Path.Combine(fixture.DataDirectoryOf(h.HostId), "volumes", info.VolumeId.ToString("N"))).ToList();
        Assert.All(directories, d => Assert.True(Directory.Exists(d), $"{d} should exist before delete"));

        await fixture.Client.DeleteVolumeAsync(name);

        Assert.All(directories, d => Assert.False(Directory.Exists(d), $"{d} should be gone after delete"));
        Assert.Null(fixture.Client.Maps.Current.FindVolume(name));
    }
}
