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

    [LoggerMessage(2003, LogLevel.Warning, "NBD client {Remote}: protocol violation, closing: {Reason}")]
    public static partial void ProtocolViolation(ILogger logger, EndPoint? remote, string reason);

    [LoggerMessage(2004, LogLevel.Warning, "NBD client {Remote}: {Command} at {Offset}+{Length} failed with {Errno}: {Message}")]
    public static partial void RequestFailed(ILogger logger, EndPoint? remote, string command, ulong offset, uint length, uint errno, string message);

    [LoggerMessage(2005, LogLevel.Information, "NBD client {Remote} went away: {Reason}")]
    public static partial void ConnectionLost(ILogger logger, EndPoint? remote, string reason);

    [LoggerMessage(2007, LogLevel.Warning, "NBD client {Remote}: TLS refused: {Reason}")]
    public static partial void TlsRefused(ILogger logger, EndPoint? remote, string reason);

    [LoggerMessage(2006, LogLevel.Debug, "NBD client {Remote}: option {Option} refused: {Reason}")]
    public static partial void OptionRefused(ILogger logger, EndPoint? remote, uint option, string reason);
}
