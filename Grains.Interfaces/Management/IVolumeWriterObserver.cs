namespace OrleansStorage.Management;

/// <summary>
/// A client that writes a volume, as the management service reaches it around a snapshot. A write
/// that spans segments is one request per segment's primary, so a snapshot taken while it is in
/// flight could hold half of it; asked here, the client holds its new writes to the volume and lets
/// the ones in flight finish first, and every write is in the snapshot whole or not at all.
/// Each pause is one snapshot create's, named by its id: a resume ends only its own pause, and the
/// writes go on once every pause of the volume has ended.
/// </summary>
[Alias("ostor.IVolumeWriterObserver")]
public interface IVolumeWriterObserver : IGrainObserver
{
    /// <summary>
    /// Returns once this client's writes to the volume in flight have finished, or after
    /// <paramref name="drainFor"/>. New writes wait until <see cref="ResumeAsync"/> of this
    /// <paramref name="pauseId"/> (and of every other pause of the volume), or until
    /// <paramref name="holdAtMost"/> should the resume never come. A pause whose resume arrived
    /// first does not begin.
    /// </summary>
    [Alias("QuiesceWithPauseId")]
    Task QuiesceAsync(Guid volumeId, Guid pauseId, TimeSpan drainFor, TimeSpan holdAtMost);

    /// <summary>Ends the pause <paramref name="pauseId"/>, and only that one.</summary>
    [Alias("ResumeWithPauseId")]
    Task ResumeAsync(Guid volumeId, Guid pauseId);
}
