using System.Net;
using Microsoft.Extensions.Logging;

namespace OrleansStorage.Client.Nbd;

/// <summary>Log lines of the NBD export; event ids 2000-2099.</summary>
internal static partial class NbdLog
{
    [LoggerMessage(2000, LogLevel.Information, "NBD server listening on {Endpoint}")]
    public static partial void Listening(ILogger logger, IPEndPoint endpoint);

    [LoggerMessage(2001, LogLevel.Information, "NBD client {Remote} ({Client}) connected to export '{Export}' ({Size} bytes, structured replies {Structured})")]
    public static partial void Connected(ILogger logger, EndPoint? remote, string client, string export, long size, bool structured);

    [LoggerMessage(2002, LogLevel.Information, "NBD client {Remote} disconnected")]
    public static partial void Disconnected(ILogger logger, EndPoint? remote);

    [LoggerMessage(2003, LogLevel.Warning, "NBD client {Remote}: closing: {Reason} ({Suppressed} more refusals not logged since the last)")]
    public static partial void ProtocolViolation(ILogger logger, EndPoint? remote, string reason, long suppressed);

    [LoggerMessage(2004, LogLevel.Warning, "NBD client {Remote}: {Command} at {Offset}+{Length} failed with {Errno}: {Message} ({Suppressed} more refusals not logged since the last)")]
    public static partial void RequestFailed(ILogger logger, EndPoint? remote, string command, ulong offset, uint length, uint errno, string message, long suppressed);

    [LoggerMessage(2005, LogLevel.Information, "NBD client {Remote} went away: {Reason} ({Suppressed} more refusals not logged since the last)")]
    public static partial void ConnectionLost(ILogger logger, EndPoint? remote, string reason, long suppressed);

    [LoggerMessage(2007, LogLevel.Warning, "NBD client {Remote}: TLS refused: {Reason} ({Suppressed} more refusals not logged since the last)")]
    public static partial void TlsRefused(ILogger logger, EndPoint? remote, string reason, long suppressed);

    [LoggerMessage(2008, LogLevel.Warning, "NBD server: accepting a connection failed ({Error}: {Message}); trying again shortly ({Suppressed} more refusals not logged since the last)")]
    public static partial void AcceptFailed(ILogger logger, string error, string message, long suppressed);

    [LoggerMessage(2010, LogLevel.Information, "NBD server: no client connected; buffers dropped, resident memory {Before} MiB -> {After} MiB (heap {Heap} MiB, pinned {Pinned} MiB, large {Large} MiB, fragmented {Fragmented} MiB)")]
    public static partial void MemoryGivenBack(ILogger logger, long before, long after, long heap, long pinned, long large, long fragmented);

    [LoggerMessage(2009, LogLevel.Warning, "NBD client {Remote} refused: {Reason} ({Suppressed} more refusals not logged since the last)")]
    public static partial void ConnectionRefused(ILogger logger, EndPoint? remote, string reason, long suppressed);

    /// <summary>
    /// A client-chosen string as it may appear in a log line: control and format characters
    /// escaped (no forged lines, no terminal escapes), at most 128 characters.
    /// </summary>
    public static string Printable(string text)
    {
        var printable = new System.Text.StringBuilder(Math.Min(text.Length, 128) + 8);
        foreach (var rune in text.EnumerateRunes())
        {
            if (printable.Length >= 128)
            {
                printable.Append("...");
                break;
            }
            var category = System.Globalization.CharUnicodeInfo.GetUnicodeCategory(rune.Value);
            if (category is System.Globalization.UnicodeCategory.Control or System.Globalization.UnicodeCategory.Format
                or System.Globalization.UnicodeCategory.LineSeparator or System.Globalization.UnicodeCategory.ParagraphSeparator || rune.Value == '\\')
            {
                printable.Append(rune.Value <= 0xFF ? $"\\x{rune.Value:x2}" : $"\\u{rune.Value:x4}");
            }
            else
            {
                printable.Append(rune.ToString());
            }
        }
        return printable.ToString();
    }

    [LoggerMessage(2011, LogLevel.Warning, "NBD client {Remote} ({Client}): its grant changed to {Grant}, which no longer lets it {Lost} volume '{Volume}': {Consequence}")]
    public static partial void AccessLost(ILogger logger, EndPoint? remote, string client, string grant, string lost, string volume, string consequence);

    [LoggerMessage(2012, LogLevel.Warning, "NBD server: looking up the grant of client '{Client}' failed ({Message}); its sessions keep the grant last seen {Seconds:0} s ago")]
    public static partial void GrantLookupFailed(ILogger logger, string client, string message, double seconds);

    [LoggerMessage(2013, LogLevel.Error, "NBD server: applying the changed grant of client '{Client}' to a session failed: {Message}")]
    public static partial void GrantChangeFailed(ILogger logger, string client, string message);

    [LoggerMessage(2006, LogLevel.Debug, "NBD client {Remote}: option {Option} refused: {Reason}")]
    public static partial void OptionRefused(ILogger logger, EndPoint? remote, uint option, string reason);
}
