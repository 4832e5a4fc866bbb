using System.Collections.Immutable;
using OrleansStorage.Errors;
using OrleansStorage.Management;
using OrleansStorage.Maps;
using OrleansStorage.Qos;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>QoS limits in the map, and each host's share of them.</summary>
public sealed class VolumeQosTests
{
    private static readonly Guid VolumeId = Guid.NewGuid();

    /// <summary>Four placement groups: host-a leads one, host-b three.</summary>
    private static ClusterMap Map(VolumeQos? qos) => new(3, [], [new VolumeInfo(VolumeId, "v", 4 * 4096, 2, 4096, VolumeState.Active,
        [new PlacementGroup(0, ["host-a", "host-b"]), new PlacementGroup(1, ["host-b", "host-a"]), new PlacementGroup(2, ["host-b", "host-a"]), new PlacementGroup(3, ["host-b", "host-a"])], qos)]);

    [Fact]
    public void Setting_limits_is_one_epoch_lifting_them_leaves_none_in_the_map_and_the_same_limits_change_nothing()
    {
        var transitions = new ClusterMapTransitions(new ManagementOptions());
        var limited = transitions.SetVolumeQos(Map(null), "v", new VolumeQos(100, 0, 0, 1 << 20));
        Assert.Equal(4, limited.Epoch);
        Assert.Equal(new VolumeQos(100, 0, 0, 1 << 20), limited.FindVolume("v")!.Qos);
        Assert.Same(limited, transitions.SetVolumeQos(limited, "v", new VolumeQos(100, 0, 0, 1 << 20)));
        var lifted = transitions.SetVolumeQos(limited, "v", VolumeQos.Unlimited);
        Assert.Equal(5, lifted.Epoch);
        Assert.Null(lifted.FindVolume("v")!.Qos);
        Assert.Throws<VolumeNotFoundException>(() => transitions.SetVolumeQos(limited, "w", VolumeQos.Unlimited));
        Assert.Throws<InvalidRequestException>(() => transitions.SetVolumeQos(limited, "v", new VolumeQos(0, -1, 0, 0)));
    }

    [Fact]
    public async Task A_host_holds_the_share_of_the_limit_that_matches_the_groups_it_leads_and_half_a_second_s_worth_comes_at_once()
    {
        // 400 reads/s for the volume: host-a leads 1 group of 4, so it lets 100/s through, 50 at once.
        var clock = new ManualClock();
        var a = new VolumeQosGate("host-a", clock);
        var b = new VolumeQosGate("host-b", clock);
        var c = new VolumeQosGate("host-c", clock);
        foreach (var gate in new[] { a, b, c })
        {
            gate.Adopt(Map(new VolumeQos(400, 0, 0, 0)));
        }
        // The clock stands still, so each read books the next 10 ms: 51 start within the burst.
        for (var i = 0; i < 51; i++)
        {
            await a.WaitAsync(VolumeId, write: false, 4096);
        }
        Assert.Equal(0, a.Delayed);
        var waiting = a.WaitAsync(VolumeId, write: false, 4096).AsTask(); // starts 10 ms past the burst: it waits
        Assert.False(waiting.IsCompleted);
        await waiting;
        Assert.Equal(1, a.Delayed);
        for (var i = 0; i < 150; i++)
        {
            await b.WaitAsync(VolumeId, write: false, 4096); // host-b's share is 300/s, 150 in the burst
            await c.WaitAsync(VolumeId, write: false, 4096); // host-c leads nothing: no limit there
        }
        Assert.Equal(0, b.Delayed);
        Assert.Equal(0, c.Delayed);
        await a.WaitAsync(VolumeId, write: true, 1 << 20); // writes are not limited
        Assert.Equal(1, a.Delayed);

        // Lifted in the next map: no waiting at all.
        a.Adopt(Map(null));
        for (var i = 0; i < 200; i++)
        {
            await a.WaitAsync(VolumeId, write: false, 4096);
        }
        Assert.Equal(1, a.Delayed);
    }

    [Fact]
    public async Task A_large_write_goes_at_once_the_next_waits_for_its_bytes_and_past_two_seconds_of_backlog_requests_are_turned_away()
    {
        var clock = new ManualClock();
        var gate = new VolumeQosGate("host-b", clock);
        gate.Adopt(Map(new VolumeQos(0, 0, 0, 64 * 1024))); // host-b: 48 KiB/s
        await gate.WaitAsync(VolumeId, write: true, 48 * 1024); // a second's bytes, nothing before it: at once
        Assert.Equal(0, gate.Delayed);
        var second = gate.WaitAsync(VolumeId, write: true, 48 * 1024).AsTask(); // starts in 1 s: waits half a second
        var third = gate.WaitAsync(VolumeId, write: true, 48 * 1024).AsTask(); // starts in 2 s: the most that is queued
        Assert.False(second.IsCompleted);
        var refused = await Assert.ThrowsAsync<VolumeThrottledException>(() => gate.WaitAsync(VolumeId, write: true, 4096).AsTask());
        Assert.Equal(TimeSpan.FromSeconds(1), refused.RetryAfter); // when its start would be back within the backlog
        Assert.Contains("volume throttled by its QoS limits (w64KiB/s)", refused.Message, StringComparison.Ordinal);
        await Task.WhenAll(second, third);
        Assert.Equal(2, gate.Delayed);
    }
}
