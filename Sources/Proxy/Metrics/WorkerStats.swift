/// Where the proxy-wide counters of one worker sit in its `CounterSlab` (`ProxyMetrics.workers`).
enum WorkerStats {
    /// Requests no upstream took: the proxy's own endpoints, requests no route matched, and
    /// requests refused before routing (a `RequestStats` block).
    static let unrouted = 0
    /// Bytes read from and written to clients (tunnels included).
    static let bytesReceived = RequestStats.size
    static let bytesSent = bytesReceived + 1
    static let connectionsAccepted = bytesSent + 1
    /// Connections left waiting in the listen queue because `limits.max_connections` was reached.
    static let connectionsRefused = connectionsAccepted + 1
    /// Gauges: client connections open, and those of them that are tunnels (WebSockets…).
    static let clientsOpen = connectionsRefused + 1
    static let tunnelsOpen = clientsOpen + 1
    /// Requests sent again on a fresh connection after a pooled one failed.
    static let retries = tunnelsOpen + 1
    /// Requests refused by the proxy itself, by status (`rejectionCodes`, then any other).
    static let rejected = retries + 1
    static let rejectionCodes: [UInt16] = [400, 405, 408, 413, 414, 431, 501, 505]
    static let size = rejected + rejectionCodes.count + 1

    static func rejectionIndex(_ status: UInt16) -> Int {
        rejected + (rejectionCodes.firstIndex(of: status) ?? rejectionCodes.count)
    }
}
