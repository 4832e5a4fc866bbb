using Microsoft.Extensions.Logging.Abstractions;
using OrleansStorage.Auth;
using OrleansStorage.Client.Nbd;
using OrleansStorage.Errors;
using OrleansStorage.Tests.Infrastructure;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>How the NBD server follows the grants of clients with open sessions (issue 29, item 2), one round of lookups at a time on a manual clock.</summary>
public sealed class NbdGrantWatchTests
{
    private static readonly ClientGrant ReadWrite = new("editor", [Capability.Parse("rw:img-*")]);
    private static readonly ClientGrant ReadOnly = new("editor", [Capability.Parse("ro:img-*")]);

    private readonly ManualClock _clock = new();
    private readonly List<string> _lookups = [];
    private Func<string, ClientGrant?> _answer = _ => ReadWrite;

    private NbdGrantWatch NewWatch() => new(client =>
    {
        _lookups.Add(client);
        return Task.FromResult(_answer(client));
    }, TimeSpan.FromHours(1), _clock, NullLogger.Instance);

    [Fact]
    public async Task A_narrowed_grant_is_told_once_to_every_session_of_the_client_with_one_lookup_per_round()
    {
        await using var watch = NewWatch();
        var first = watch.Watch(ReadWrite);
        var second = watch.Watch(ReadWrite);
        Assert.Same(first, second);
        var told = new List<ClientGrant>();
        first.Changed += told.Add;

        Assert.True(await watch.CheckOnceAsync());
        Assert.Empty(told); // the same rights: nothing to tell

        _answer = _ => ReadOnly;
        Assert.True(await watch.CheckOnceAsync());
        Assert.True(await watch.CheckOnceAsync());
        Assert.Equal([ReadOnly], told);
        Assert.Same(ReadOnly, first.Grant);
        Assert.Equal(["editor", "editor", "editor"], _lookups);

        watch.Unwatch(first);
        Assert.True(await watch.CheckOnceAsync()); // the second session still watches
        watch.Unwatch(second);
        Assert.False(await watch.CheckOnceAsync());
        Assert.Equal(4, _lookups.Count);
    }

    [Fact]
    public async Task A_failing_lookup_keeps_the_grant_last_seen_for_a_ticket_s_lifetime_then_takes_every_right_away()
    {
        await using var watch = NewWatch();
        var watched = watch.Watch(ReadWrite);
        var told = new List<ClientGrant>();
        watched.Changed += told.Add;
        _answer = _ => throw new StorageException("the auth service is failing over");

        _clock.Advance(TicketGrant.Lifetime - TimeSpan.FromSeconds(1));
        await watch.CheckOnceAsync();
        Assert.Same(ReadWrite, watched.Grant);
        Assert.Empty(told);

        _clock.Advance(TimeSpan.FromSeconds(2));
        await watch.CheckOnceAsync();
        Assert.Empty(watched.Grant.Capabilities);
        Assert.Single(told);
    }

    [Fact]
    public async Task A_removed_grant_reads_as_no_rights_and_a_cluster_that_checks_none_changes_nothing()
    {
        await using var watch = NewWatch();
        var watched = watch.Watch(ReadWrite);
        _answer = _ => null; // the server's cluster checks no grants
        await watch.CheckOnceAsync();
        Assert.Same(ReadWrite, watched.Grant);

        _answer = client => new ClientGrant(client, []);
        await watch.CheckOnceAsync();
        Assert.False(watched.Grant.Allows(CapabilityLevel.Read, "img-1"));
    }

    [Fact]
    public async Task A_lookup_that_throws_anything_or_a_session_that_fails_on_a_change_stops_neither_the_others_nor_the_watch()
    {
        await using var watch = NewWatch();
        var watched = watch.Watch(ReadWrite);
        var told = new List<ClientGrant>();
        watched.Changed += _ => throw new InvalidOperationException("a session that fails");
        watched.Changed += told.Add;

        _answer = _ => throw new TaskCanceledException("the call was cancelled");
        Assert.True(await watch.CheckOnceAsync());
        Assert.Same(ReadWrite, watched.Grant);

        _answer = _ => ReadOnly;
        Assert.True(await watch.CheckOnceAsync());
        Assert.Equal([ReadOnly], told);
    }

    [Fact]
    public async Task A_new_session_s_handshake_grant_is_the_freshest_and_reaches_the_open_ones()
    {
        await using var watch = NewWatch();
        var first = watch.Watch(ReadOnly);
        var told = new List<ClientGrant>();
        first.Changed += told.Add;

        // Widened, and the client reconnected before the next lookup: the new session is not narrowed to the old grant.
        var second = watch.Watch(ReadWrite);
        Assert.Same(first, second);
        Assert.Same(ReadWrite, second.Grant);
        Assert.Equal([ReadWrite], told);
    }

    [Fact]
    public async Task The_running_watch_goes_on_looking_up_after_lookups_fail()
    {
        var lookups = 0;
        var third = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var watch = new NbdGrantWatch(_ =>
        {
            if (Interlocked.Increment(ref lookups) >= 3)
            {
                third.TrySetResult();
            }
            throw new TaskCanceledException("the call was cancelled");
        }, TimeSpan.FromMilliseconds(50), TimeProvider.System, NullLogger.Instance);
        watch.Watch(ReadWrite);
        await third.Task.WaitAsync(TimeSpan.FromSeconds(60));
    }
}
