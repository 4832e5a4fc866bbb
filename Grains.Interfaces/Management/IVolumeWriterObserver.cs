namespace OrleansStorage.Management;

/// <summary>
/// A client that writes a volume, as the management service reaches it around a snapshot. A write
/// that spans segments is one request per segment's primary, so a snapshot taken while it is in
/// flight could hold half of it; asked here, the client holds its new writes to the volume and lets
/// the ones in flight finish first, and every write is in the snapshot whole or not at all.
/// </summary>
[Alias("ostor.IVolumeWriterObserver")]
public interface IVolumeWriterObserver : IGrainObserver
{
    /// <summary>
    /// Returns once this client's writes to the volume in flight have finished, or after
    /// <paramref name="drainFor"/>. New writes wait until <see cref="ResumeAsync"/>, or
    /// <paramref name="holdAtMost"/> should the resume never come.
    /// </summary>
    [Alias("Quiesce")]
    Task QuiesceAsync(Guid volumeId, TimeSpan drainFor, TimeSpan holdAtMost);

    [Alias("Resume")]
    Task ResumeAsync(Guid volumeId);
}
