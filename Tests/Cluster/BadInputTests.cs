using OrleansStorage.Errors;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Cluster;

/// <summary>Bad input gets a clear error naming the value and changes nothing.</summary>
[Collection(StorageClusterCollection.Name)]
public sealed class BadInputTests(StorageClusterFixture fixture)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableTheory]
    [InlineData("../escape", "not allowed")]
    [InlineData("a/b", "not allowed")]
    [InlineData("", "must not be empty")]
    [InlineData(".hidden", "not allowed")]
    [InlineData("x..y", "not allowed")]
    public async Task Volume_names_that_could_escape_or_confuse_are_rejected(string name, string expected)
    {
        fixture.SkipIfUnavailable();
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.CreateVolumeAsync(name, 4096, 1), expected);
    }

    [SkippableTheory]
    [InlineData(0L, "must be > 0")]
    [InlineData(-4096L, "must be > 0")]
    [InlineData(4097L, "multiple of 4096")]
    [InlineData(long.MaxValue - 4095, "exceeds the limit")]
    public async Task Negative_unaligned_or_absurd_sizes_are_rejected(long size, string expected)
    {
        fixture.SkipIfUnavailable();
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.CreateVolumeAsync("size-" + Guid.NewGuid().ToString("N")[..8], size, 1), expected);
    }

    [SkippableTheory]
    [InlineData(0, "out of range")]
    [InlineData(4, "out of range")]
    public async Task Replication_factor_out_of_range_is_rejected(int factor, string expected)
    {
        fixture.SkipIfUnavailable();
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.CreateVolumeAsync("factor-" + Guid.NewGuid().ToString("N")[..8], 4096, factor), expected);
    }

    [SkippableFact]
    public async Task Duplicate_volume_name_is_rejected_and_the_first_volume_keeps_its_data()
    {
        fixture.SkipIfUnavailable();
        var name = "dup-" + Guid.NewGuid().ToString("N")[..12];
        var first = await fixture.Client.CreateVolumeAsync(name, 2L * Segment, 1);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        var data = Replicas.RandomBytes(4096, 1);
        await volume.WriteAsync(0, data);

        await AssertRejectedWithoutChangeAsync(() => fixture.Client.CreateVolumeAsync(name, 4L * Segment, 2), "already exists");

        var kept = (await fixture.Client.GetMapAsync()).FindVolume(name)!;
        Assert.Equal((first.VolumeId, first.SizeBytes, first.ReplicationFactor), (kept.VolumeId, kept.SizeBytes, kept.ReplicationFactor));
        var back = new byte[4096];
        await volume.ReadAsync(0, back);
        Assert.Equal(data, back);
    }

    [SkippableFact]
    public async Task Unknown_volume_is_a_clear_error()
    {
        fixture.SkipIfUnavailable();
        var error = await Assert.ThrowsAsync<VolumeNotFoundException>(() => fixture.Client.OpenVolumeAsync("no-such-volume"));
        Assert.Contains("no-such-volume", error.Message, StringComparison.Ordinal);
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.ResizeVolumeAsync("no-such-volume", 8192), "no volume named");
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.DeleteVolumeAsync("no-such-volume"), "no volume named");
    }

    [SkippableFact]
    public async Task Shrinking_a_volume_is_rejected()
    {
        fixture.SkipIfUnavailable();
        var name = "shrink-" + Guid.NewGuid().ToString("N")[..12];
        await fixture.Client.CreateVolumeAsync(name, 4L * Segment, 1);
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.ResizeVolumeAsync(name, 2L * Segment), "grow only");
    }

    [SkippableFact]
    public async Task Io_past_the_end_or_at_negative_offsets_is_rejected_and_writes_nothing()
    {
        fixture.SkipIfUnavailable();
        var name = "bounds-" + Guid.NewGuid().ToString("N")[..12];
        var size = 2L * Segment + 8192; // the last segment is partial
        var info = await fixture.Client.CreateVolumeAsync(name, size, 2);
        var volume = await fixture.Client.OpenVolumeAsync(name);

        await Assert.ThrowsAsync<InvalidRequestException>(() => volume.WriteAsync(size - 4096, new byte[8192]));
        await Assert.ThrowsAsync<InvalidRequestException>(() => volume.WriteAsync(-1, new byte[10]));
        await Assert.ThrowsAsync<InvalidRequestException>(() => volume.ReadAsync(size, new byte[1]));
        await Assert.ThrowsAsync<InvalidRequestException>(() => volume.TrimAsync(0, size + 1));

        // Straight to the server: a range past the volume's end inside its last segment, and a
        // segment number past the end, are refused there too.
        var epoch = fixture.Client.Maps.Current.Epoch;
        var last = info.PlacementGroupOf(2).Primary;
        var pastEnd = await Assert.ThrowsAsync<InvalidRequestException>(() =>
            fixture.Server(last).WriteAsync(new SegmentWrite(epoch, new SegmentAddress(info.VolumeId, 2), 4096, new byte[8192], false)));
        Assert.Contains("outside volume", pastEnd.Message, StringComparison.Ordinal);
        var primary99 = info.PlacementGroupOf(99).Primary;
        await Assert.ThrowsAsync<InvalidRequestException>(() =>
            fixture.Server(primary99).WriteAsync(new SegmentWrite(epoch, new SegmentAddress(info.VolumeId, 99), 0, new byte[4096], false)));

        // Nothing reached the disks of the replicas.
        await Replicas.AssertAllHoldAsync(fixture, info, 0, new byte[size]);
    }

    [SkippableFact]
    public async Task Host_operations_on_unknown_busy_or_needed_hosts_are_rejected()
    {
        fixture.SkipIfUnavailable();
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.EvacuateHostAsync("no-such-host"), "no host 'no-such-host'");
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.RemoveHostAsync("no-such-host"), "no host 'no-such-host'");
        await AssertRejectedWithoutChangeAsync(() => fixture.Client.RemoveHostAsync("host-1"), "evacuate");

        // Three hosts and a factor-3 volume: evacuating one would leave too few for its replicas.
        await fixture.Client.CreateVolumeAsync("needs-three", 4L * Segment, 3);
        try
        {
            await AssertRejectedWithoutChangeAsync(() => fixture.Client.EvacuateHostAsync("host-2"), "needs 3 other Up hosts");
        }
        finally
        {
            await fixture.Client.DeleteVolumeAsync("needs-three");
        }
    }

    [SkippableTheory]
    [InlineData(-1L, 0L, "read IOPS limit -1 is outside 0 (none) to 10000000")]
    [InlineData(20_000_000L, 0L, "is outside 0 (none) to 10000000")]
    [InlineData(0L, 100L, "read bytes/s limit 100 is below 4096 (0 means none)")]
    [InlineData(0L, -4096L, "read bytes/s limit -4096 is below 4096")]
    public async Task Bad_qos_limits_are_rejected_and_change_nothing(long iops, long bytesPerSecond, string expected)
    {
        fixture.SkipIfUnavailable();
        var name = "qos-" + Guid.NewGuid().ToString("N")[..8];
        await fixture.Client.CreateVolumeAsync(name, 4096, 1);
        try
        {
            await AssertRejectedWithoutChangeAsync(() => fixture.Client.SetVolumeQosAsync(name, new Maps.VolumeQos(iops, 0, bytesPerSecond, 0)), expected);
            await AssertRejectedWithoutChangeAsync(() => fixture.Client.SetVolumeQosAsync("no-such-volume", new Maps.VolumeQos(10, 0, 0, 0)), "no volume named 'no-such-volume'");
            Assert.Null((await fixture.Management.GetMapAsync()).FindVolume(name)!.Qos);
        }
        finally
        {
            await fixture.Client.DeleteVolumeAsync(name);
        }
    }

    private async Task AssertRejectedWithoutChangeAsync(Func<Task> action, string expectedMessagePart)
    {
        // The map still settling from earlier work (a purge confirmed, primaries evened out) is not the action's change.
        var before = await SettledMapAsync();
        var error = await Assert.ThrowsAnyAsync<StorageException>(action);
        Assert.Contains(expectedMessagePart, error.Message, StringComparison.Ordinal);
        var after = await fixture.Management.GetMapAsync();
        Assert.Equal(before.Epoch, after.Epoch);
        Assert.Equal(before.Volumes.Select(v => v.Name), after.Volumes.Select(v => v.Name));
    }

    /// <summary>The map once it has not moved for half a second (bounded: 20 tries).</summary>
    private async Task<Maps.ClusterMap> SettledMapAsync()
    {
        var map = await fixture.Management.GetMapAsync();
        for (var attempt = 0; attempt < 20; attempt++)
        {
            await Task.Delay(500);
            var next = await fixture.Management.GetMapAsync();
            if (next.Epoch == map.Epoch)
            {
                return next;
            }
            map = next;
        }
        return map;
    }
}
