using System.IO.Enumeration;
using System.Text.RegularExpressions;
using OrleansStorage.Errors;

namespace OrleansStorage.Auth;

/// <summary>How much a capability allows on the volumes it names; each level includes the ones below.</summary>
public enum CapabilityLevel
{
    /// <summary><c>ro</c>: read, allocation maps.</summary>
    Read = 1,

    /// <summary><c>rw</c>: read, write, trim, flush.</summary>
    Write = 2,

    /// <summary><c>admin</c>: also create, resize, delete and verify; on <c>*</c>, the whole cluster.</summary>
    Admin = 3,
}

/// <summary>
/// One thing a client may do, as <c>LEVEL:PATTERN</c>: <c>ro:backup-*</c>, <c>rw:vm-?</c>,
/// <c>admin:*</c>. The pattern matches volume names with <c>*</c> (any run) and <c>?</c> (one character).
/// </summary>
[GenerateSerializer, Immutable, Alias("ostor.Capability")]
public sealed partial record Capability(
    [property: Id(0)] CapabilityLevel Level,
    [property: Id(1)] string Pattern)
{
    public const string Everything = "*";

    public static Capability ClusterAdmin { get; } = new(CapabilityLevel.Admin, Everything);

    public bool Covers(CapabilityLevel level, string volumeName) =>
        Level >= level && FileSystemName.MatchesSimpleExpression(Pattern, volumeName, ignoreCase: false);

    public override string ToString() => $"{LevelName(Level)}:{Pattern}";

    public static Capability Parse(string text)
    {
        var colon = text.IndexOf(':');
        var level = colon < 0 ? null : text[..colon] switch
        {
            "ro" => CapabilityLevel.Read,
            "rw" => CapabilityLevel.Write,
            "admin" => (CapabilityLevel?)CapabilityLevel.Admin,
            _ => null,
        };
        if (level is null || !PatternShape().IsMatch(text[(colon + 1)..]))
        {
            throw new InvalidRequestException($"'{text}' is not a capability: give LEVEL:PATTERN with LEVEL ro, rw or admin and PATTERN volume-name characters with * and ?, e.g. rw:vm-*");
        }
        return new Capability(level.Value, text[(colon + 1)..]);
    }

    public static string LevelName(CapabilityLevel level) => level switch
    {
        CapabilityLevel.Read => "ro",
        CapabilityLevel.Write => "rw",
        CapabilityLevel.Admin => "admin",
        _ => $"level-{(int)level}",
    };

    public static string Format(IEnumerable<Capability> capabilities) => string.Join(' ', capabilities);

    [GeneratedRegex(@"^[A-Za-z0-9._*?-]{1,128}$")]
    private static partial Regex PatternShape();
}

/// <summary>A client and what it may do.</summary>
[GenerateSerializer, Immutable, Alias("ostor.ClientGrant")]
public sealed record ClientGrant(
    [property: Id(0)] string Client,
    [property: Id(1)] Capability[] Capabilities)
{
    /// <summary>The client every cluster starts with, an administrator of everything (Ceph's client.admin).</summary>
    public const string BootstrapAdmin = "admin";

    public bool Allows(CapabilityLevel level, string volumeName) => Capabilities.Any(c => c.Covers(level, volumeName));

    public bool IsClusterAdmin => Capabilities.Any(c => c.Level == CapabilityLevel.Admin && c.Pattern == Capability.Everything);
}
