/// The client bytes a connection already added to its worker's `bytesSent` / `bytesReceived`
/// counters, so that each call adds only what moved since the last (HTTP/1 and HTTP/2
/// connections both count this way). Threading: a value owned by one connection, loop thread only.
struct ClientTraffic {
    private var sentCounted: UInt64 = 0
    private var receivedCounted: UInt64 = 0

    /// Adds `client`'s traffic since the last call to `stats`.
    @inline(__always)
    mutating func count<Client: ByteStream>(_ client: Client, into stats: CounterSlab) {
        let sent = client.bytesWritten, received = client.bytesRead
        stats.add(WorkerStats.bytesSent, sent &- sentCounted)
        stats.add(WorkerStats.bytesReceived, received &- receivedCounted)
        sentCounted = sent
        receivedCounted = received
    }
}
