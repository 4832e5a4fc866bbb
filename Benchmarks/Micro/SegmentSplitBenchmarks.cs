using BenchmarkDotNet.Attributes;
using OrleansStorage.Client.Library;

namespace OrleansStorage.Benchmarks.Micro;

/// <summary>The client's split of a volume request over segments.</summary>
[MemoryDiagnoser]
public class SegmentSplitBenchmarks
{
    private const int SegmentSize = 4 << 20;

    [Benchmark]
    public SegmentSlice[] Split4KInsideOneSegment() => SegmentSplitter.Split(12_345_678, 4096, SegmentSize);

    [Benchmark]
    public SegmentSlice[] Split1MAcrossABoundary() => SegmentSplitter.Split((4L << 20) - 4096, 1 << 20, SegmentSize);

    [Benchmark]
    public SegmentSlice[] Split32MOverNineSegments() => SegmentSplitter.Split(4096, 32 << 20, SegmentSize);
}
