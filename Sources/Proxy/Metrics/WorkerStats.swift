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
    /// TLS handshakes by outcome (`TLSResult`), completed ones by version (1.2, 1.3, other) and
    /// by full or resumed, and the completed ones' duration histogram (`RequestStats` buckets).
    static let tlsHandshakes = rejected + rejectionCodes.count + 1
    static let tlsVersions = tlsHandshakes + TLSResult.allCases.count
    static let tlsVersionNames = ["1.2", "1.3", "other"]
    static let tlsResumed = tlsVersions + tlsVersionNames.count
    static let tlsHandshakeDuration = tlsResumed + 2
    static let tlsHandshakeDurationSum = tlsHandshakeDuration + RequestStats.bucketCount
    /// HTTP/2: connections (a total and an open gauge), streams opened by clients, and
    /// connections ended for abusing the protocol (floods, resets, glitches).
    static let http2Connections = tlsHandshakeDurationSum + 1
    static let http2ConnectionsOpen = http2Connections + 1
    static let http2Streams = http2ConnectionsOpen + 1
    static let http2AbusiveConnections = http2Streams + 1
    /// Requests a route's `policy` refused, by `RoutePolicy.Refusal`.
    static let policyRefusals = http2AbusiveConnections + 1
    /// Requests whose global rate limit could not be asked (Redis down, slow or refusing) and
    /// got `redis.on_error`'s answer.
    static let rateLimitStoreErrors = policyRefusals + RoutePolicy.Refusal.allCases.count
    /// Connections to a `proxy_protocol` listener closed for a missing or malformed PROXY header.
    static let proxyHeaderRefusals = rateLimitStoreErrors + 1
    static let size = proxyHeaderRefusals + 1

    /// How a TLS handshake on a listener ended; the raw value is the offset from `tlsHandshakes`.
    enum TLSResult: Int, CaseIterable {
        case ok, failed, timeout, closed, plaintextHTTP

        /// The `result` label.
        var label: String {
            switch self {
            case .ok: "ok"
            case .failed: "failed"
            case .timeout: "timeout"
            case .closed: "closed"
            case .plaintextHTTP: "plain_http"
            }
        }
    }

    static func rejectionIndex(_ status: UInt16) -> Int {
        rejected + (rejectionCodes.firstIndex(of: status) ?? rejectionCodes.count)
    }
}
