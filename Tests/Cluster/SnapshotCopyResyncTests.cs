using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;
using OrleansStorage.Maps;
using OrleansStorage.Segments;
using OrleansStorage.Storage;
using OrleansStorage.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace OrleansStorage.Tests.Cluster;

/// <summary>
/// A snapshot's copy whose version is unknown is never sent over the good copies of the other
/// replicas (issue 28, hole 3, factor 2 or more). Such a copy is what a crash left of a copy
/// written in place: some extents missing, checksums that agree with what is there, and the
/// version unknown because its write intent was set.
/// </summary>
[Collection(StorageClusterCollection.Name)]
public sealed class SnapshotCopyResyncTests(StorageClusterFixture fixture, ITestOutputHelper output)
{
    private const int Segment = StorageClusterFixture.SegmentSize;

    [SkippableFact]
    public async Task A_resync_never_sends_a_primarys_copy_of_unknown_version_over_a_replicas_good_copy_and_the_primary_takes_the_good_one()
    {
        fixture.SkipIfUnavailable();
        // The shared cluster may still be taking back a host an earlier test killed: this test needs two replicas.
        await new Eventually(output).MapAsync(() => fixture.Management.GetMapAsync(),
            m => m.Hosts.Count(h => h.State == HostState.Up) >= 2 && Eventually.GroupsFull(m), "two hosts Up and every group full", TimeSpan.FromSeconds(60));
        var name = $"snap-unknown-{Guid.NewGuid():N}"[..20];
        await fixture.Client.CreateVolumeAsync(name, 2L * Segment, 2);
        var volume = await fixture.Client.OpenVolumeAsync(name);
        var held = Replicas.RandomBytes(Segment, seed: 31);
        await volume.WriteAsync(0, held);
        await volume.FlushAsync();
        var snapshot = await fixture.Client.CreateSnapshotAsync(name, "s1");
        await volume.WriteAsync(0, Replicas.RandomBytes(Segment, seed: 32)); // copies segment 0 on both replicas

        var map = await fixture.Management.GetMapAsync();
        var info = map.FindVolume(volume.VolumeId)!;
        var group = info.PlacementGroupOf(0);
        var (primary, replica) = (group.Primary, group.Replicas[1]);
        var copy = new SegmentAddress(snapshot.SnapshotId, 0);
        var goodVersion = await fixture.Server(replica).GetSegmentVersionAsync(map.Epoch, copy);

        // The primary's copy as a crash in the middle of writing it in place left it: its second
        // half never written (a hole, whose checksums agree), its version unknown.
        var store = StoreOf(primary);
        await store.TrimAsync(copy, Segment, Segment / 2, Segment / 2);
        store.ForgetVersion(copy);

        // A light scrub with repair sees the versions differ and has the replica resynced.
        var scrub = await fixture.Server(primary).ScrubSegmentAsync(map.Epoch, new SegmentAddress(volume.VolumeId, 0), repair: true, deep: false);
        output.WriteLine(string.Join("\n", scrub.Problems));
        await new Eventually(output).UntilAsync(async () =>
        {
            var now = await fixture.Client.GetMapAsync();
            var g = now.FindVolume(volume.VolumeId)!.PlacementGroupOf(0);
            // The map may have moved for another test of the shared cluster already: wait for the
            // resync itself, which ends with the primary holding a copy of known version again.
            return now.Epoch > map.Epoch && g.Replicas.Length == 2 && g.Pending.IsEmpty
                && await fixture.Server(primary).GetSegmentVersionAsync(now.Epoch, copy) != SegmentVersions.Unknown;
        }, "the replica reported and resynced, and the primary's copy is known again", TimeSpan.FromSeconds(60));

        var epoch = (await fixture.Management.GetMapAsync()).Epoch;
        var onReplica = (await fixture.Server(replica).ReadLocalAsync(copy, 0, Segment)).Bytes;
        var firstWrong = onReplica.Span.CommonPrefixLength(held);
        Assert.True(firstWrong == Segment, $"the replica's good copy was overwritten by the primary's copy of unknown version: it differs from byte {firstWrong}; its version is now {await fixture.Server(replica).GetSegmentVersionAsync(epoch, copy)}, it was {goodVersion}");
        Assert.Equal(goodVersion, await fixture.Server(replica).GetSegmentVersionAsync(epoch, copy));

        // The primary took the replica's copy: the snapshot reads what it held again.
        Assert.Equal(goodVersion, await fixture.Server(primary).GetSegmentVersionAsync(epoch, copy));
        var read = new byte[Segment];
        await (await fixture.Client.OpenVolumeAsync(name + "@s1")).ReadAsync(0, read);
        Assert.True(read.AsSpan().SequenceEqual(held), "the snapshot does not read what the volume held when it was taken");
    }

    private SegmentStore StoreOf(string hostId)
    {
        var silo = fixture.Cluster.Silos.Single(s => fixture.HostIdOfSilo(s.Name) == hostId);
        return ((InProcessSiloHandle)silo).SiloHost.Services.GetRequiredService<SegmentStore>();
    }
}
