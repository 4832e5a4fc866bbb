using System.Text.Json;
using System.Text.Json.Serialization;

namespace OrleansStorage.Identity;

/// <summary>
/// The first thing a host writes into its data directory, and the first it reads at start: which
/// cluster and which host the directory belongs to. Like a Ceph OSD's superblock, it lets a host
/// refuse a database, a map or a host id that is not its own instead of guessing.
/// <see cref="FilesPrivate"/>: the directory and everything in it were made its owner's alone
/// (<see cref="Files.PrivateFiles"/>); absent in a directory of a version that did not, which the
/// host tightens once at its first start.
/// </summary>
public sealed record Superblock(
    [property: JsonPropertyName("format")] int Format,
    [property: JsonPropertyName("clusterId")] Guid ClusterId,
    [property: JsonPropertyName("hostId")] string HostId,
    [property: JsonPropertyName("createdAt")] DateTimeOffset CreatedAt,
    [property: JsonPropertyName("filesPrivate")] bool FilesPrivate = false)
{
    /// <summary>The data directory layout this code reads and writes.</summary>
    public const int CurrentFormat = 1;

    public const string FileName = "superblock.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    /// <summary>Parses a superblock; a file that is not one is an error naming the file.</summary>
    public static Superblock Parse(string path, byte[] bytes)
    {
        Superblock? superblock;
        try
        {
            superblock = JsonSerializer.Deserialize<Superblock>(bytes, Json);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"'{path}' is not an OrleansStorage superblock: {ex.Message}");
        }
        if (superblock is null || superblock.ClusterId == Guid.Empty || string.IsNullOrEmpty(superblock.HostId))
        {
            throw new InvalidDataException($"'{path}' is not an OrleansStorage superblock: it names no cluster or host");
        }
        if (superblock.Format != CurrentFormat)
        {
            throw new InvalidDataException($"'{path}' has data directory format {superblock.Format}; this version reads format {CurrentFormat} only");
        }
        return superblock;
    }
}
