using System.CommandLine;
using OrleansStorage.Auth;
using OrleansStorage.Errors;

namespace OrleansStorage.Client.Cli;

/// <summary><c>ostor auth</c>: which client may do what (its certificate says who it is).</summary>
public static partial class OstorCommandLine
{
    private static Command AuthCommands()
    {
        var auth = new Command("auth", "Clients' capabilities: LEVEL:PATTERN with LEVEL ro, rw or admin on volume names matching PATTERN (* and ?); admin:* administers the cluster");

        var list = new Command("list", "Every client with a grant and its capabilities");
        list.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            var grants = await client.ListClientsAsync();
            PrintTable(["CLIENT", "CAPABILITIES"], grants.Select(g => new[] { g.Client, Capability.Format(g.Capabilities) }));
        }));
        auth.Add(list);

        var addName = new Argument<string>("NAME") { Description = "The client's name (its certificate's, from 'ostor pki issue-client')" };
        var addCaps = new Argument<string[]>("CAPS") { Description = "Capabilities, e.g. ro:* rw:vm-*", Arity = ArgumentArity.OneOrMore };
        var add = new Command("add", "Give a client its first capabilities") { addName, addCaps };
        add.SetAction((parse, ct) =>
        {
            var capabilities = parse.GetValue(addCaps)!.Select(Capability.Parse).ToArray();
            return WithClientAsync(parse, async client =>
            {
                var grant = await client.AddClientAsync(parse.GetValue(addName)!, capabilities);
                Console.WriteLine($"client '{grant.Client}' may now: {Capability.Format(grant.Capabilities)}");
            });
        });
        auth.Add(add);

        var capsName = new Argument<string>("NAME") { Description = "The client's name" };
        var capsCaps = new Argument<string[]>("CAPS") { Description = "Capabilities, replacing the current ones (none: show them)", Arity = ArgumentArity.ZeroOrMore };
        var caps = new Command("caps", "Show or replace a client's capabilities; tickets it already holds stop counting within seconds") { capsName, capsCaps };
        caps.SetAction((parse, ct) =>
        {
            var capabilities = parse.GetValue(capsCaps)!.Select(Capability.Parse).ToArray();
            var name = parse.GetValue(capsName)!;
            return WithClientAsync(parse, async client =>
            {
                var grant = capabilities.Length == 0
                    ? await client.GetClientAsync(name) ?? throw new InvalidRequestException($"client '{name}' has no grant")
                    : await client.SetClientCapabilitiesAsync(name, capabilities);
                Console.WriteLine($"client '{grant.Client}' may: {Capability.Format(grant.Capabilities)}");
            });
        });
        auth.Add(caps);

        var removeName = new Argument<string>("NAME") { Description = "The client's name" };
        var remove = new Command("remove", "Take every capability from a client: it gets no new ticket, and the ones it holds stop counting within seconds") { removeName };
        remove.SetAction((parse, ct) => WithClientAsync(parse, async client =>
        {
            await client.RemoveClientAsync(parse.GetValue(removeName)!);
            Console.WriteLine($"client '{parse.GetValue(removeName)}' has no capabilities now");
        }));
        auth.Add(remove);
        return auth;
    }
}
