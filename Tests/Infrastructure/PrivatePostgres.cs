using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace OrleansStorage.Tests.Infrastructure;

/// <summary>
/// One private PostgreSQL server for the whole test run: initdb in a temporary folder, its own
/// port on loopback, trust authentication, fsync off (tests need no crash durability of the
/// database itself). Each fixture gets a fresh database with the project's schema applied.
/// </summary>
public sealed class PrivatePostgres
{
    private static readonly Lazy<Task<PrivatePostgres?>> Shared = new(StartAsync);
    private static string? _unavailableReason;

    private PrivatePostgres(string binDirectory, string dataDirectory, int port)
    {
        BinDirectory = binDirectory;
        DataDirectory = dataDirectory;
        Port = port;
    }

    public string BinDirectory { get; }
    public string DataDirectory { get; }
    public int Port { get; }

    /// <summary>The shared server, or null with <see cref="UnavailableReason"/> when PostgreSQL is not installed.</summary>
    public static Task<PrivatePostgres?> GetAsync() => Shared.Value;

    public static string UnavailableReason => _unavailableReason ?? "";

    public string ConnectionString(string database) =>
        $"Host=127.0.0.1;Port={Port};Username=postgres;Database={database};Maximum Pool Size=40;Timeout=30";

    /// <summary>Creates an empty database and applies infra/sql/orleans-schema.sql to it.</summary>
    public async Task<string> CreateDatabaseAsync(string prefix)
    {
        var database = $"{prefix}_{Guid.NewGuid():N}"[..Math.Min(prefix.Length + 33, 63)];
        await using (var admin = new NpgsqlConnection(ConnectionString("postgres")))
        {
            await admin.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE \"{database}\"", admin);
            await create.ExecuteNonQueryAsync();
        }
        await ApplySchemaAsync(ConnectionString(database));
        return ConnectionString(database);
    }

    public static string SchemaPath => Path.Combine(AppContext.BaseDirectory, "sql", "orleans-schema.sql");

    public static async Task ApplySchemaAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(await File.ReadAllTextAsync(SchemaPath), connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>The PostgreSQL binaries of the Debian package, or null when it is not installed.</summary>
    public static string? FindBinDirectory() =>
        Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).FirstOrDefault(d => File.Exists(Path.Combine(d, "initdb")))
            : null;

    private static async Task<PrivatePostgres?> StartAsync()
    {
        var bin = FindBinDirectory();
        if (bin is null)
        {
            _unavailableReason = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); .ci/run installs it with apt-get install postgresql";
            Console.Error.WriteLine($"*** SKIPPING CLUSTER TESTS: {_unavailableReason} ***");
            return null;
        }
        var data = Path.Combine(Path.GetTempPath(), $"ostor-test-pg-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(data);
        var asRoot = Environment.UserName == "root";
        if (asRoot)
        {
            // PostgreSQL refuses to run as root: run it as the 'postgres' user the package creates.
            await RunAsync("chown", ["postgres:postgres", data], asPostgres: false);
        }
        await RunAsync(Path.Combine(bin, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"], asRoot);
        var port = Ports.Free();
        await RunAsync(Path.Combine(bin, "pg_ctl"),
            ["-D", data, "-l", Path.Combine(data, "server.log"), "-w", "-t", "60", "start",
             "-o", $"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"],
            asRoot);
        var server = new PrivatePostgres(bin, data, port);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => server.Stop(asRoot);
        return server;
    }

    private void Stop(bool asRoot)
    {
        try
        {
            RunAsync(Path.Combine(BinDirectory, "pg_ctl"), ["-D", DataDirectory, "-m", "immediate", "stop"], asRoot).GetAwaiter().GetResult();
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (Exception)
        {
            // Best effort at process exit; the folder is under the temp directory.
        }
    }


    private static Task RunAsync(string program, string[] arguments, bool asPostgres) =>
        asPostgres
            ? ExternalProgram.RunAsync("runuser", ["-u", "postgres", "--", program, .. arguments])
            : ExternalProgram.RunAsync(program, arguments);
}
