namespace OrleansStorage.Chaos.Workload;

/// <summary>A volume the workload writes to: its name and replication factor.</summary>
public sealed record ChaosVolume(string Name, int ReplicationFactor);

/// <summary>
/// Where the workload's blocks live. Blocks are numbered across the volumes, <see cref="BlocksPerVolume"/>
/// each; block k of a volume sits in segment k mod (segments), so every placement group has one
/// and some segments have two (two registers behind one primary's per-segment write order).
/// </summary>
public sealed class BlockLayout(IReadOnlyList<ChaosVolume> volumes, long segmentSizeBytes, long volumeSizeBytes)
{
    public const int BlocksPerVolume = 48;

    public IReadOnlyList<ChaosVolume> Volumes => volumes;

    public int Blocks => volumes.Count * BlocksPerVolume;

    public long VolumeSizeBytes => volumeSizeBytes;

    public int VolumeOf(int block) => block / BlocksPerVolume;

    public long OffsetOf(int block)
    {
        var k = block % BlocksPerVolume;
        var segments = volumeSizeBytes / segmentSizeBytes;
        var blocksPerSegment = segmentSizeBytes / History.BlockValue.Size;
        // 37 is odd, so k*37 mod (blocks per segment) differs for two blocks of the same segment.
        return (k % segments * segmentSizeBytes) + (k * 37 % blocksPerSegment * History.BlockValue.Size);
    }

    public string Describe(int block) => $"block {block} ({volumes[VolumeOf(block)].Name} offset {OffsetOf(block)})";
}
