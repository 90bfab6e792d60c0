/// One version of the configuration as the supervisor hands it to every worker: the config and
/// the shared halves of all its backends (every pool's). A reload publishes a new one with a
/// higher number.
public struct ConfigGeneration: Sendable {
    public let number: Int
    public let config: ProxyConfig
    public let backends: [SharedBackend]
    /// One per entry of `config.allUpstreams`, in that order.
    public let upstreams: [SharedUpstream]
    /// `limits.max_connections` in force: the configured one, or the one the supervisor derived
    /// from the descriptor limit (`ConnectionBudget`).
    public let maxConnections: Int
    /// One per entry of `config.listeners`: the TLS context of a TLS listener (built by the
    /// supervisor from the certificate files), nil for cleartext ones. Empty: all cleartext.
    public let tls: [TLSContext?]
    /// The port `redirect_to_https` points at: the first TLS listener's bound port.
    public let httpsPort: UInt16?

    /// Policy refusals by route (`config.routes` order, then the default pool) and reason, one
    /// slab per worker (worker `i` writes slab `i`): `proxy_policy_refusals_total{route,reason}`.
    /// A reload starts them over with its routes; a re-resolution keeps them.
    public let routeRefusals: [CounterSlab]
    /// The buckets of each route's `scope: "proxy"` `rate_limit` (`config.routes` order, then the
    /// default pool; nil where a route has none), shared by every worker. A generation whose
    /// route keeps the same `rate_limit` at the same position keeps its table (`previous`).
    public let sharedRateLimits: [SharedRateLimitTable?]
    /// One per distinct JWKS URL the routes' `auth.jwt` names, fetched by the supervisor
    /// (`KeySetFetcher`) and read by every worker. A generation naming a source the previous one
    /// had keeps its object, and so the keys fetched.
    public let keySets: [RemoteKeySet]

    public init(number: Int, config: ProxyConfig, backends: [SharedBackend], upstreams: [SharedUpstream],
                maxConnections: Int? = nil, tls: [TLSContext?] = [], httpsPort: UInt16? = nil,
                workers: Int = 1, routeRefusals: [CounterSlab]? = nil, previous: ConfigGeneration? = nil) {
        let limits = config.routes.map { $0.policy.merged(over: config.policy).rateLimit } + [config.policy.rateLimit]
        sharedRateLimits = limits.enumerated().map { index, limit in
            guard let limit, limit.rate > 0, limit.scope == .proxy else { return nil }
            if let previous, index < previous.sharedRateLimits.count, let kept = previous.sharedRateLimits[index], kept.config == limit {
                return kept
            }
            return SharedRateLimitTable(limit)
        }
        var sets: [RemoteKeySet] = []
        for policy in config.routes.map({ $0.policy.merged(over: config.policy) }) + [config.policy] {
            guard let source = policy.auth?.jwt?.remote, !sets.contains(where: { $0.source == source }) else { continue }
            if let kept = previous?.keySets.first(where: { $0.source == source }) {
                sets.append(kept)
            } else {
                // Other settings for the same URL and CA: a new set that starts with the keys held.
                let same = previous?.keySets.first { $0.source.url == source.url && $0.source.ca == source.ca }
                sets.append(RemoteKeySet(source, carrying: same))
            }
        }
        keySets = sets
        self.routeRefusals = routeRefusals ?? (0..<max(workers, 1)).map { _ in
            CounterSlab(count: (config.routes.count + 1) * RoutePolicy.Refusal.allCases.count)
        }
        self.tls = tls
        self.httpsPort = httpsPort
        self.number = number
        self.config = config
        self.backends = backends
        self.upstreams = upstreams
        self.maxConnections = maxConnections ?? config.limits.maxConnections ?? ConnectionBudget.fallback
    }
}

/// A `ConfigGeneration` made ready for one worker's request path: its own `Backend` objects
/// (with pools) grouped into `Upstream`s, the compiled `Router`, and the limits pre-converted to
/// the forms the parser and `admit` use.
///
/// A client connection holds the settings it started its current exchange with, so a reload
/// never changes the routes, backend lists or limits under an exchange in flight; the next
/// request on the connection picks up the new ones.
/// Threading: loop thread only.
final class ServerSettings {
    let generation: Int
    let config: ProxyConfig
    /// `ConfigGeneration.routeRefusals`: every worker's slab (for `/_metrics`), and this worker's.
    let routeRefusals: [CounterSlab]
    let routeRefusalSlab: CounterSlab
    /// `ConfigGeneration.maxConnections`.
    let maxConnections: Int
    let upstreams: [Upstream]
    let router: Router
    /// Every backend of every upstream.
    let backends: [Backend]
    let headLimits: HeadLimits
    /// `limits.allowed_methods` as bytes, and the `Allow` header line a 405 carries.
    let allowedMethods: [[UInt8]]
    let allowField: String?
    /// The proxy's own paths (`admin`), as bytes.
    let adminPaths: AdminPaths
    /// What each listener (by its index in `config.listeners`) speaks.
    let listeners: [ListenerRole]
    /// `/_status`'s page for this configuration's JSON path: built on first request, then reused.
    private(set) lazy var statusPage: [UInt8] = StatusEndpoint.page(jsonPath: adminPaths.statusJSONPath ?? "")
    /// The request inspector's page, its path written in.
    private(set) lazy var inspectorPage: [UInt8] = Array(InspectorPageHTML.template.replacing("__INSPECT_PATH__", with: adminPaths.inspectPath ?? "").utf8)

    /// Builds the worker's view of `generation`, reusing the `Backend` (and so the pool) of every
    /// backend that `previous` already had.
    /// `previousRouter`: the worker's router before; a route whose `rate_limit` did not change
    /// (same position and setting) keeps its buckets, so a re-resolution or an unrelated reload
    /// does not hand every client a fresh burst.
    /// `redis`: the worker's client of the top-level `redis`, for global rate limits.
    init(_ generation: ConfigGeneration, worker: Int, previous: [Backend], previousRouter: Router? = nil, redis: RedisClient? = nil) {
        self.generation = generation.number
        routeRefusals = generation.routeRefusals
        routeRefusalSlab = generation.routeRefusals[min(worker, generation.routeRefusals.count - 1)]
        config = generation.config
        maxConnections = generation.maxConnections
        let pool = generation.config.pool
        let backends = generation.backends.map { shared in
            if let kept = previous.first(where: { $0.shared === shared }) {
                kept.pool.maxIdle = pool.maxIdlePerBackend
                kept.pool.idleTimeoutMs = UInt64(pool.idleTimeoutMs)
                return kept
            }
            return Backend(shared: shared, worker: worker,
                           pool: UpstreamPool(maxIdle: pool.maxIdlePerBackend, idleTimeoutMs: UInt64(pool.idleTimeoutMs)))
        }
        self.backends = backends
        let upstreams = zip(config.allUpstreams, generation.upstreams).map { u, shared in
            let members = u.backends.flatMap { b in backends.filter { $0.shared.backendID == b.id } }
            return Upstream(shared: shared, worker: worker, backends: members, balance: u.balance,
                            weights: members.map(\.shared.effectiveWeight))
        }
        self.upstreams = upstreams
        router = Router(config, previous: previousRouter, sharedRateLimits: generation.sharedRateLimits, redis: redis,
                        keySets: generation.keySets) { name in upstreams.firstIndex { $0.name == name } }
        headLimits = HeadLimits(config.limits)
        allowedMethods = config.limits.allowedMethods.map { Array($0.utf8) }
        adminPaths = AdminPaths(config.admin, inspecting: config.inspect.enabled)
        listeners = config.listeners.enumerated().map { i, listener in
            ListenerRole(listener, tls: i < generation.tls.count ? generation.tls[i] : nil, httpsPort: generation.httpsPort)
        }
        allowField = config.limits.allowedMethods.isEmpty ? nil : config.limits.allowedMethods.joined(separator: ", ")
    }
}
