using OrleansStorage.Maps;
using OrleansStorage.Storage;
using Xunit;

namespace OrleansStorage.Tests.Infrastructure;

public static class Replicas
{
    /// <summary>
    /// Reads every segment touching [offset, offset+length) straight from every replica (not
    /// through the primary) and asserts they all hold exactly <paramref name="expected"/>.
    /// </summary>
    public static async Task AssertAllHoldAsync(StorageClusterFixture fixture, VolumeInfo volume, long offset, ReadOnlyMemory<byte> expected)
    {
        var segmentSize = volume.SegmentSizeBytes;
        var first = offset / segmentSize;
        var last = (offset + expected.Length - 1) / segmentSize;
        for (var segment = first; segment <= last; segment++)
        {
            var segmentStart = segment * segmentSize;
            var from = Math.Max(offset, segmentStart);
            var to = Math.Min(offset + expected.Length, segmentStart + segmentSize);
            var want = expected.Slice((int)(from - offset), (int)(to - from));
            var group = volume.PlacementGroupOf(segment);
            Assert.Equal(volume.ReplicationFactor, group.Replicas.Length);
            foreach (var host in group.Replicas)
            {
                var held = (await fixture.Server(host).ReadLocalAsync(new SegmentAddress(volume.VolumeId, segment), (int)(from - segmentStart), want.Length)).Bytes;
                Assert.True(want.Span.SequenceEqual(held.Span), $"replica on {host} of segment {segment} (pg {group.Index}) differs from what was written");
            }
        }
    }

    /// <summary>Asserts that every replica of every segment in the range holds the same bytes as the others.</summary>
    public static async Task AssertIdenticalAsync(StorageClusterFixture fixture, VolumeInfo volume, long offset, long length)
    {
        var segmentSize = volume.SegmentSizeBytes;
        for (var segment = offset / segmentSize; segment <= (offset + length - 1) / segmentSize; segment++)
        {
            var group = volume.PlacementGroupOf(segment);
            var address = new SegmentAddress(volume.VolumeId, segment);
            var reference = (await fixture.Server(group.Primary).ReadLocalAsync(address, 0, segmentSize)).Bytes;
            foreach (var host in group.Replicas.Skip(1))
            {
                var other = (await fixture.Server(host).ReadLocalAsync(address, 0, segmentSize)).Bytes;
                Assert.True(reference.Span.SequenceEqual(other.Span), $"segment {segment}: replica on {host} differs from primary {group.Primary}");
            }
        }
    }

    /// <summary>Every replica of every group holds copies of the same versions for every snapshot, and the same bytes.</summary>
    public static async Task AssertSnapshotCopiesIdenticalAsync(StorageClusterFixture fixture, VolumeInfo volume)
    {
        var epoch = (await fixture.Management.GetMapAsync()).Epoch;
        foreach (var group in volume.PlacementGroups)
        {
            var primary = await fixture.Server(group.Primary).GetSnapshotCopyVersionsAsync(epoch, volume.VolumeId, group.Index);
            foreach (var host in group.Replicas.Skip(1))
            {
                var theirs = await fixture.Server(host).GetSnapshotCopyVersionsAsync(epoch, volume.VolumeId, group.Index);
                Assert.Equal(primary.Select(c => (c.SnapshotId, string.Join(",", c.Versions))), theirs.Select(c => (c.SnapshotId, string.Join(",", c.Versions))));
                foreach (var copies in primary)
                {
                    for (var i = 0; i < copies.Versions.Length; i++)
                    {
                        if (copies.Versions[i] == SnapshotCopyVersions.NoCopy)
                        {
                            continue;
                        }
                        var address = new SegmentAddress(copies.SnapshotId, group.Index + ((long)i * volume.PlacementGroups.Length));
                        var ours = (await fixture.Server(group.Primary).ReadLocalAsync(address, 0, volume.SegmentSizeBytes)).Bytes;
                        var other = (await fixture.Server(host).ReadLocalAsync(address, 0, volume.SegmentSizeBytes)).Bytes;
                        Assert.True(ours.Span.SequenceEqual(other.Span), $"copy of segment {address.SegmentIndex} for snapshot {copies.SnapshotId}: {host} differs from {group.Primary}");
                    }
                }
            }
        }
    }

    public static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
