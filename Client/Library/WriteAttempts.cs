namespace OrleansStorage.Client.Library;

/// <summary>
/// Counts, for the calls made inside one scope (its async flow), how many times a request that
/// changes data was sent to a primary. A write whose reply was lost, or whose primary was
/// deposed while it was on the way, is sent again, so a write acknowledged once may have taken
/// effect more than once before its acknowledgement: a history checker (infra/chaos) must know
/// which writes were sent more than once to judge what their readers saw. Counted as each send
/// begins, so one that never left (its host unreachable) counts too: the count errs high, which
/// only makes such a checker more lenient, never wrongly strict.
/// </summary>
public sealed class WriteAttempts : IDisposable
{
    private static readonly AsyncLocal<WriteAttempts?> s_current = new();
    private int _sent;

    private WriteAttempts()
    {
    }

    /// <summary>How many data-changing requests the scope's calls have sent so far.</summary>
    public int Sent => Volatile.Read(ref _sent);

    /// <summary>Starts counting for the calls this async flow makes from now until the scope is disposed.</summary>
    public static WriteAttempts Count()
    {
        var scope = new WriteAttempts();
        s_current.Value = scope;
        return scope;
    }

    internal static void CountOne()
    {
        if (s_current.Value is { } scope)
        {
            Interlocked.Increment(ref scope._sent);
        }
    }

    public void Dispose()
    {
        if (s_current.Value == this)
        {
            s_current.Value = null;
        }
    }
}
