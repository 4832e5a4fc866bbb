namespace OrleansStorage.Client.Cli;

/// <summary>A text progress bar: <c>[#####.....]</c>.</summary>
public static class ProgressBar
{
    public static string Render(double fraction, int width = 30)
    {
        var filled = (int)(Math.Clamp(fraction, 0, 1) * width);
        return "[" + new string('#', filled) + new string('.', width - filled) + "]";
    }
}
