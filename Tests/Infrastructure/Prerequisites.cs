using Xunit;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// A test's prerequisite (PostgreSQL, a real NBD client): on a developer's machine a missing one
/// skips the test, loudly; in CI (CI set, as .ci/run runs), where .ci/run installs every one of
/// them, a missing one fails the test.
/// </summary>
public static class Prerequisites
{
    public static bool InCi => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI"));

    public static void Require(bool available, string reason)
    {
        if (available)
        {
            return;
        }
        if (InCi)
        {
            throw new InvalidOperationException($"prerequisite missing in CI: {reason}");
        }
        Skip.If(true, reason);
    }
}
