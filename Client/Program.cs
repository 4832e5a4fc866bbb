using OrleansStorage.Client.Cli;

return await OstorCommandLine.RunAsync(args);
