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
        /// A claim of the request's JSON Web Token (the route's `auth.jwt` checked it); tokens
        /// without it share one bucket.
        case claim(String)

        public var description: String {
            switch self {
            case .clientIP: "client_ip"
            case .header(let name): "header:\(name)"
            case .route: "route"
            case .claim(let name): "jwt:\(name)"
            }
        }
    }

    /// Where the buckets live: `worker` (each worker loop its own: with N workers a client may
    /// get up to N × rate when its connections spread), `proxy` (one table all worker loops
    /// update without a lock: the rate holds for the whole process), `global` (in the top-level
    /// `redis`, shared by every proxy instance using it; each worker leases tokens in batches).
    public enum Scope: String, Sendable, Equatable { case worker, proxy, global }

    public var key: Key = .clientIP
    public var rate = 0
    /// The window `rate` is counted over, in milliseconds (`"per": "1s"`, `"1m"`, `"1h"`).
    public var perMs = 1000
    public var burst = 0
    public var scope: Scope = .worker
    /// Most keys remembered per route and worker; past it the stalest is forgotten (memory stays
    /// bounded under a flood of distinct keys, at the price of forgetting some of them).
    public var maxKeys = 65_536
    /// `global`: how many tokens a worker takes from Redis in one round trip (0: chosen from the
    /// rate, see `leaseSize`).
    public var lease = 0

    public init() {}
}

extension RateLimitConfig {
    /// `global`: the tokens one Redis round trip asks for — `lease`, else a twentieth of a
    /// second's worth of the rate (at least 1, at most 1,000); never more than `burst + 1`, what
    /// Redis could grant at once.
    var leaseSize: Int {
        let chosen = lease > 0 ? lease : min(1000, max(1, Int(Double(rate) * 50.0 / Double(perMs))))
        return max(1, min(chosen, burst + 1))
    }

    /// `RateLimit-Policy` (IETF draft-ietf-httpapi-ratelimit-headers): the quota over a window of
    /// whole seconds (`per` rounded up, the quota scaled to it, rounded down).
    var policyField: String {
        let seconds = max(1, (perMs + 999) / 1000)
        let quota = Int(Double(rate) * Double(seconds * 1000) / Double(perMs))
        return "\"route\";q=\(quota);w=\(seconds)"
    }
}
