/// `"rate_limit": {"key": "client_ip", "rate": 100, "per": "1s", "burst": 50, "scope": "worker"}`
/// on a route or in the top-level `policy`: at most `rate` requests per `per` for each value of
/// `key`, with `burst` more allowed at once (GCRA, the generic cell rate algorithm: one
/// timestamp per key). Over the limit: 429 with `Retry-After` and the IETF `RateLimit-Policy` /
/// `RateLimit` fields.
public struct RateLimitConfig: Sendable, Equatable {
    public enum Key: Sendable, Equatable, CustomStringConvertible {
        /// The client (see `trusted_proxies`).
        case clientIP
        /// A request header's value (lowercase name); requests without it share one bucket.
        case header(String)
        /// The whole route: one bucket.
        case route

        public var description: String {
            switch self {
            case .clientIP: "client_ip"
            case .header(let name): "header:\(name)"
            case .route: "route"
            }
        }
    }

    /// Where the buckets live: `worker` (each worker loop its own: with N workers a client may
    /// get up to N × rate when its connections spread), `proxy` (one table all worker loops
    /// update without a lock: the rate holds for the whole process). `global` (Redis) is not
    /// built yet.
    public enum Scope: String, Sendable, Equatable { case worker, proxy }

    public var key: Key = .clientIP
    public var rate = 0
    /// The window `rate` is counted over, in milliseconds (`"per": "1s"`, `"1m"`, `"1h"`).
    public var perMs = 1000
    public var burst = 0
    public var scope: Scope = .worker
    /// Most keys remembered per route and worker; past it the stalest is forgotten (memory stays
    /// bounded under a flood of distinct keys, at the price of forgetting some of them).
    public var maxKeys = 65_536

    public init() {}
}
