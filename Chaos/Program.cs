using OrleansStorage.Chaos;

ChaosOptions options;
try
{
    options = ChaosOptions.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine("ostor-chaos: " + ex.Message);
    return 2;
}
return await new ChaosRun(options, Console.Out).RunAsync();
