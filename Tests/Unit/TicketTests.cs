using OrleansStorage.Auth;
using OrleansStorage.Errors;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>Tickets as a silo judges them: sealed by this cluster, unchanged, unexpired; and the capability language.</summary>
public sealed class TicketTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 28, 12, 0, 0, TimeSpan.Zero);

    private static Principal Reader(DateTimeOffset expires) =>
        new("reader", IsHost: false, expires, new ClientGrant("reader", [Capability.Parse("ro:vm-*")]));

    [Fact]
    public void A_sealed_ticket_opens_to_its_principal_until_it_expires()
    {
        var key = new TicketKey(new byte[32]);
        var ticket = key.Seal(Reader(Now.AddMinutes(5)));

        var principal = key.Open(ticket, Now, out var problem);
        Assert.Null(problem);
        Assert.Equal("reader", principal!.Name);
        Assert.False(principal.IsHost);
        Assert.True(principal.Allows(CapabilityLevel.Read, "vm-1"));
        Assert.False(principal.Allows(CapabilityLevel.Write, "vm-1"));
        Assert.False(principal.Allows(CapabilityLevel.Read, "other"));

        Assert.Null(key.Open(ticket, Now.AddMinutes(5), out problem));
        Assert.Contains("expired", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void A_changed_forged_or_foreign_ticket_is_refused()
    {
        var key = new TicketKey(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray());
        var ticket = key.Seal(Reader(Now.AddMinutes(5)));

        // Every single flipped bit anywhere, tag included: the capabilities cannot be edited.
        for (var bit = 0; bit < ticket.Length * 8; bit++)
        {
            var changed = (byte[])ticket.Clone();
            changed[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.Null(key.Open(changed, Now, out _));
        }
        Assert.Null(new TicketKey(new byte[32]).Open(ticket, Now, out var foreign));
        Assert.Contains("not sealed by this cluster", foreign, StringComparison.Ordinal);
        Assert.Null(key.Open(null, Now, out var missing));
        Assert.Contains("no ticket", missing, StringComparison.Ordinal);
        Assert.Null(key.Open(new byte[10], Now, out var malformed));
        Assert.Contains("malformed", malformed, StringComparison.Ordinal);
        Assert.Null(key.Open(ticket[..^1], Now, out _));
    }

    [Theory]
    [InlineData("ro:*", CapabilityLevel.Read, "anything", true)]
    [InlineData("ro:*", CapabilityLevel.Write, "anything", false)]
    [InlineData("rw:vm-*", CapabilityLevel.Read, "vm-7", true)]
    [InlineData("rw:vm-*", CapabilityLevel.Write, "vm-7", true)]
    [InlineData("rw:vm-*", CapabilityLevel.Admin, "vm-7", false)]
    [InlineData("rw:vm-*", CapabilityLevel.Write, "xvm-7", false)]
    [InlineData("rw:vm-?", CapabilityLevel.Write, "vm-12", false)]
    [InlineData("admin:db.*", CapabilityLevel.Admin, "db.main", true)]
    [InlineData("admin:db.*", CapabilityLevel.Read, "DB.main", false)]
    public void A_capability_covers_its_level_and_below_on_matching_names(string capability, CapabilityLevel level, string volume, bool covered) =>
        Assert.Equal(covered, Capability.Parse(capability).Covers(level, volume));

    [Theory]
    [InlineData("rw")]
    [InlineData("write:vm-*")]
    [InlineData("rw:")]
    [InlineData("rw:vm/1")]
    [InlineData("rw:vm 1")]
    [InlineData(":*")]
    public void A_malformed_capability_is_one_clear_error(string text)
    {
        var error = Assert.Throws<InvalidRequestException>(() => Capability.Parse(text));
        Assert.Contains("is not a capability", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Only_admin_on_every_name_administers_the_cluster()
    {
        Assert.True(new ClientGrant("a", [Capability.Parse("admin:*")]).IsClusterAdmin);
        Assert.False(new ClientGrant("b", [Capability.Parse("admin:vm-*")]).IsClusterAdmin);
        Assert.False(new ClientGrant("c", [Capability.Parse("rw:*")]).IsClusterAdmin);
        Assert.Equal("ro:a* rw:b?", Capability.Format([Capability.Parse("ro:a*"), Capability.Parse("rw:b?")]));
    }

    [Fact]
    public void A_ticket_issued_before_its_client_s_grant_changed_is_refused_and_one_issued_from_then_on_is_not()
    {
        var changed = Now;
        var access = new AccessControl(Microsoft.Extensions.Logging.Abstractions.NullLogger<AccessControl>.Instance)
        {
            Revocations = new TicketRevocations(new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal) { ["reader"] = changed }),
        };
        // Tickets carry whole seconds of expiry; the auth service stamps tickets after a change no earlier than it.
        var before = Reader(changed - TimeSpan.FromSeconds(1) + TicketGrant.Lifetime);
        var after = Reader(changed + TicketGrant.Lifetime);

        var refused = access.Revoked(before);
        Assert.NotNull(refused);
        Assert.Contains("issued before its grant changed", refused.Message, StringComparison.Ordinal);
        Assert.Null(access.Revoked(after));
        Assert.Null(access.Revoked(new Principal("writer", IsHost: false, before.Expires, new ClientGrant("writer", [Capability.Parse("rw:*")]))));
        Assert.Null(access.Revoked(new Principal("reader", IsHost: true, before.Expires, new ClientGrant("reader", []))));
    }

    [Fact]
    public void Through_seal_and_open_a_ticket_from_the_same_second_before_a_change_is_refused_and_one_after_it_is_not()
    {
        var key = new TicketKey(new byte[32]);
        var changedAt = Now.AddMilliseconds(400);
        var revokedBefore = TicketRevocations.RevokedBeforeFor(changedAt);
        var revocations = new TicketRevocations(new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal) { ["reader"] = revokedBefore });
        Principal Issued(DateTimeOffset at) =>
            key.Open(key.Seal(Reader(TicketRevocations.IssuedAt(at, at >= changedAt ? revokedBefore : null) + TicketGrant.Lifetime)), at, out _)!;

        foreach (var before in new[] { Now, Now.AddMilliseconds(399), Now.AddSeconds(-1).AddMilliseconds(900) })
        {
            Assert.NotNull(revocations.Refusal("reader", Issued(before).Expires));
        }
        foreach (var after in new[] { changedAt, Now.AddMilliseconds(999), Now.AddSeconds(1), Now.AddSeconds(7).AddMilliseconds(1) })
        {
            Assert.Null(revocations.Refusal("reader", Issued(after).Expires));
        }
    }
}
