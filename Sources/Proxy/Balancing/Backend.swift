/// One backend as the loop sees it: where it is, whether it is up, how busy it is, and its pool
/// of idle upstream connections.
///
/// Threading: owned by one loop; never crosses threads.
public final class Backend {
    public let id: String
    public let url: String
    public let address: SocketAddress
    /// `host:port` as written in the URL: the Host header of health probes.
    public let authority: String
    /// `authority` as bytes, for the Host header of HTTP/1.0 requests that came without one.
    let authorityBytes: [UInt8]
    public let pool: UpstreamPool

    /// Current health verdict (see `HealthChecker` for how it changes).
    public internal(set) var isHealthy = true
    /// Requests currently being forwarded to this backend.
    public internal(set) var activeRequests = 0
    /// Probe streak counters driving the thresholds.
    var consecutiveSuccesses = 0
    var consecutiveFailures = 0
    /// Whether any probe has completed yet: the first result decides the state at once.
    var hasBeenProbed = false
    /// Why the last probe failed (shown by `/_health`).
    public internal(set) var lastProbeError: String?

    public init(id: String, url: String, address: SocketAddress, authority: String, pool: UpstreamPool) {
        self.id = id
        self.url = url
        self.address = address
        self.authority = authority
        authorityBytes = Array(authority.utf8)
        self.pool = pool
    }
}
