using System.Text.RegularExpressions;

namespace OrleansStorage.Client.Cli;

/// <summary>
/// The command line's own parse errors, as a person reads them: System.CommandLine names the .NET
/// type a value did not parse into ("as expected type 'System.Nullable`1[System.Int64]'"), where
/// the reader wants the kind of value ("as a whole number").
/// </summary>
internal static partial class ParseErrors
{
    public static string Plain(string message) => ExpectedType().Replace(message, m => "as " + KindOf(m.Groups[1].Value));

    private static string KindOf(string type) =>
        type.Contains("Int", StringComparison.Ordinal) ? "a whole number"
        : type.Contains("Double", StringComparison.Ordinal) || type.Contains("Single", StringComparison.Ordinal) || type.Contains("Decimal", StringComparison.Ordinal) ? "a number"
        : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false"
        : "a value of that option's kind";

    [GeneratedRegex("as expected type '([^']*)'")]
    private static partial Regex ExpectedType();
}
