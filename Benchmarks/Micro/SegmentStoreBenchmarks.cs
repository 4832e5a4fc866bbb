using BenchmarkDotNet.Attributes;
using OrleansStorage.Segments;
using OrleansStorage.Storage;

namespace OrleansStorage.Benchmarks.Micro;

/// <summary>The segment store's file I/O: one write or read of a payload inside a 4 MiB segment.</summary>
[MemoryDiagnoser]
public class SegmentStoreBenchmarks
{
    private const int SegmentSize = 4 << 20;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-bench-store-" + Guid.NewGuid().ToString("N")[..8]);
    private SegmentStore _store = null!;
    private SegmentAddress _segment;
    private byte[] _payload = null!;
    private byte[] _buffer = null!;
    private int _next;

    [Params(4096, 64 * 1024, 1024 * 1024)]
    public int PayloadBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _store = new SegmentStore(_root);
        _segment = new SegmentAddress(Guid.NewGuid(), 0);
        _payload = new byte[PayloadBytes];
        new Random(1).NextBytes(_payload);
        _buffer = new byte[PayloadBytes];
        for (var offset = 0; offset < SegmentSize; offset += PayloadBytes)
        {
            _store.WriteAsync(_segment, SegmentSize, offset, _payload, durable: false).AsTask().GetAwaiter().GetResult();
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private int NextOffset() => (_next = (_next + PayloadBytes) % SegmentSize);

    [Benchmark]
    public ValueTask Write() => _store.WriteAsync(_segment, SegmentSize, NextOffset(), _payload, durable: false);

    [Benchmark]
    public ValueTask Read() => _store.ReadAsync(_segment, SegmentSize, NextOffset(), _buffer);
}
