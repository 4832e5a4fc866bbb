using OrleansStorage.Maps;

namespace OrleansStorage.Management;

[GenerateSerializer, Immutable, Alias("ostor.HostRegistration")]
public sealed record HostRegistration(
    [property: Id(0)] string HostId,
    [property: Id(1)] long CapacityBytes,
    [property: Id(2)] string Endpoint);

/// <summary>One host as management sees it: its place in the map plus the mismatch reports counted against it.</summary>
[GenerateSerializer, Immutable, Alias("ostor.HostReport")]
public sealed record HostReport(
    [property: Id(0)] HostInfo Host,
    [property: Id(1)] long MismatchReports);

/// <summary>A party (storage server or client) found its epoch differing from another's.</summary>
[GenerateSerializer, Immutable, Alias("ostor.EpochMismatch")]
public sealed record EpochMismatch(
    [property: Id(0)] string ReportingHostId,
    [property: Id(1)] long ServerEpoch,
    [property: Id(2)] long RequestEpoch);

/// <summary>The management service's activation: the silo it runs on and the epoch it loaded from storage when it activated.</summary>
[GenerateSerializer, Immutable, Alias("ostor.ManagementStatus")]
public sealed record ManagementStatus(
    [property: Id(0)] string Silo,
    [property: Id(1)] long Epoch,
    [property: Id(2)] long ActivatedAtEpoch,
    [property: Id(3)] DateTimeOffset ActivatedAt);
