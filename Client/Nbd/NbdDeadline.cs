namespace OrleansStorage.Client.Nbd;

/// <summary>
/// A deadline for one operation at a time (a write's payload on the read loop, a reply under the
/// send lock), reused operation after operation rather than a linked cancellation source made
/// and registered for every request on the hot path.
/// </summary>
internal sealed class NbdDeadline(CancellationToken connection, TimeSpan timeout) : IDisposable
{
    private CancellationTokenSource _source = CancellationTokenSource.CreateLinkedTokenSource(connection);

    /// <summary>Starts the clock; the token fires when it runs out or the connection is cancelled.</summary>
    public CancellationToken Start()
    {
        _source.CancelAfter(timeout);
        return _source.Token;
    }

    /// <summary>Stops the clock once the operation finished.</summary>
    public void Stop()
    {
        _source.CancelAfter(Timeout.InfiniteTimeSpan);
        if (_source.IsCancellationRequested && !connection.IsCancellationRequested)
        {
            // It ran out just as the operation finished in time: the next one needs a fresh source.
            _source.Dispose();
            _source = CancellationTokenSource.CreateLinkedTokenSource(connection);
        }
    }

    public void Dispose() => _source.Dispose();
}
