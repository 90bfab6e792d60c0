/// The routing table compiled for the request path: host patterns and path prefixes as
/// lower-case bytes, upstream names resolved to indices. Matching reads the request head's bytes
/// in place and allocates nothing.
///
/// Precedence (see `RouteConfig`): the most specific host (exact, then the longest wildcard,
/// then any), then the longest path prefix, then the earliest route. The default pool, when
/// there is one, is the last route: any host, prefix `/`.
/// Threading: built and used on one worker's loop.
struct Router {
    enum HostPattern {
        case any
        case exact([UInt8])
        /// `.example.com`
        case wildcard([UInt8])
    }

    enum HostHeader {
        case preserve
        case backend
        case literal([UInt8])
    }

    /// A class, so an exchange holds its route with one reference instead of copying three
    /// arrays (and their retains) at every look-up.
    final class Route {
        let host: HostPattern
        let path: [UInt8]
        let upstream: Int
        /// Bytes removed from the front of the target (`strip_prefix`), 0 for none.
        let stripLength: Int
        /// `X-Forwarded-Prefix` value when stripping.
        let forwardedPrefix: [UInt8]
        let hostHeader: HostHeader
        /// The top-level `timeouts` with this route's own response deadlines in place.
        let timeouts: TimeoutsConfig
        /// The route in words, for error pages.
        let description: String
        /// What it checks before a backend is contacted (`policy`).
        let policy: RoutePolicy
        /// Its position in `config.routes` (the default pool: `config.routes.count`), where its
        /// counters sit.
        let index: Int
        /// The route's `rate_limit` as this worker applies it (nil: none, or a global one).
        let rateLimiter: RateLimiter?
        /// The route's `scope: "global"` `rate_limit` (nil: none).
        let globalLimiter: GlobalRateLimiter?
        /// The route's `auth.basic` (nil: none).
        let authenticator: BasicAuthenticator?
        /// The route's `auth.jwt` (nil: none).
        let tokenAuthenticator: JWTAuthenticator?
        /// The route as metrics and the inspector name it (`RouteConfig.label`; `default`).
        let label: String
        /// The route's `compress`, or the top level's (nil: none).
        let compression: ResponseCompression?

        init(host: HostPattern, path: [UInt8], upstream: Int, stripLength: Int, forwardedPrefix: [UInt8],
             hostHeader: HostHeader, timeouts: TimeoutsConfig, description: String, policy: RoutePolicy, index: Int,
             previous: Route? = nil, shared: SharedRateLimitTable? = nil, redis: RedisClient? = nil, name: String = "",
             keySets: [RemoteKeySet] = [], compress: CompressionConfig? = nil) {
            self.index = index
            label = name
            compression = compress.map { config in previous?.compression.flatMap { $0.config == config ? $0 : nil } ?? ResponseCompression(config) }
            if let basic = policy.auth?.basic {
                authenticator = previous?.authenticator.flatMap { $0.config == basic ? $0 : nil } ?? BasicAuthenticator(basic)
            } else {
                authenticator = nil
            }
            if let jwt = policy.auth?.jwt {
                let claim: String? = if case .claim(let name)? = policy.rateLimit?.key { name } else { nil }
                let remote = jwt.remote.flatMap { source in keySets.first { $0.source == source } }
                tokenAuthenticator = previous?.tokenAuthenticator.flatMap { $0.config == jwt && $0.rateClaim == claim && $0.remote === remote ? $0 : nil }
                    ?? JWTAuthenticator(jwt, rateClaim: claim, remote: remote)
            } else {
                tokenAuthenticator = nil
            }
            let limit = policy.rateLimit
            if let limit, limit.scope == .global, let redis {
                rateLimiter = nil
                if let kept = previous?.globalLimiter, kept.config == limit, kept.redis === redis, kept.route == name {
                    globalLimiter = kept
                } else {
                    globalLimiter = GlobalRateLimiter(limit, redis: redis, route: name)
                }
            } else {
                globalLimiter = nil
                if let kept = previous?.rateLimiter, kept.config == limit, kept.shared === shared {
                    rateLimiter = kept
                } else {
                    rateLimiter = limit.map { RateLimiter($0, shared: shared) }
                }
            }
            self.description = description
            self.policy = policy
            self.timeouts = timeouts
            self.host = host
            self.path = path
            self.upstream = upstream
            self.stripLength = stripLength
            self.forwardedPrefix = forwardedPrefix
            self.hostHeader = hostHeader
        }
    }

    let routes: [Route]
    /// Only the default pool: every request goes there without looking at it.
    let isTrivial: Bool
    /// How request paths are brought to the normal form routes are matched on
    /// (`path_normalization`).
    let paths: PathNormalizer
    /// `path_normalization.forward` is `normalized`: backends get the normal form of the path
    /// instead of the bytes the client sent.
    let forwardNormalized: Bool

    /// `upstreamIndex` maps an upstream name to its index in the worker's list.
    /// `sharedRateLimits`: `ConfigGeneration.sharedRateLimits`; `redis`: the worker's client of the
    /// top-level `redis` (global rate limits).
    init(_ config: ProxyConfig, previous: Router? = nil, sharedRateLimits: [SharedRateLimitTable?] = [],
         redis: RedisClient? = nil, keySets: [RemoteKeySet] = [], upstreamIndex: (String) -> Int?) {
        let before = previous?.routes ?? []
        func previousRoute(_ index: Int) -> Route? { before.first { $0.index == index } }
        func shared(_ index: Int) -> SharedRateLimitTable? { index < sharedRateLimits.count ? sharedRateLimits[index] : nil }
        var routes: [Route] = config.routes.enumerated().compactMap { index, r in
            guard let upstream = upstreamIndex(r.upstream) else { return nil }  // the loader checked
            let host: HostPattern = switch r.host {
            case .any: .any
            case .exact(let name): .exact(Array(name.utf8))
            case .wildcard(let suffix): .wildcard(Array(suffix.utf8))
            }
            let hostHeader: HostHeader = switch r.hostHeader {
            case .preserve: .preserve
            case .backend: .backend
            case .literal(let value): .literal(Array(value.utf8))
            }
            let prefix = Array(r.strippedPrefix.utf8)
            return Route(host: host, path: Array(r.path.utf8), upstream: upstream,
                         stripLength: r.stripPrefix ? prefix.count : 0, forwardedPrefix: r.stripPrefix ? prefix : [],
                         hostHeader: hostHeader, timeouts: r.timeouts.applied(to: config.timeouts),
                         description: "host \(r.host) path \(r.path)" + (r.stripPrefix ? " (prefix stripped)" : ""),
                         policy: RoutePolicy(r.policy.merged(over: config.policy)), index: index, previous: previousRoute(index),
                         shared: shared(index), redis: redis, name: r.label, keySets: keySets,
                         compress: r.compress.resolved(over: config.compress))
        }
        if let fallback = upstreamIndex(UpstreamConfig.defaultName), !config.backends.isEmpty {
            routes.append(Route(host: .any, path: [UInt8(ascii: "/")], upstream: fallback, stripLength: 0,
                                forwardedPrefix: [], hostHeader: .preserve, timeouts: config.timeouts,
                                description: "no route matched: the default pool", policy: RoutePolicy(config.policy),
                                index: config.routes.count, previous: previousRoute(config.routes.count),
                                shared: shared(config.routes.count), redis: redis, name: "default", keySets: keySets,
                                compress: config.compress))
        }
        self.routes = routes
        let normalization = config.pathNormalization
        paths = normalization.normalizer
        forwardNormalized = normalization.forward == .normalized
        isTrivial = routes.count == 1 && routes[0].path.count == 1 && routes[0].stripLength == 0
            && { if case .any = routes[0].host { true } else { false } }()
            && { if case .preserve = routes[0].hostHeader { true } else { false } }()
            && routes[0].policy.isEmpty
    }

    /// The route for `request`: its `Host` (for an absolute-form target, the target's authority,
    /// which `HTTP1ServerConnection.admit` puts in its place), and `path`, a range of `request.bytes`
    /// holding the normal form of the path (see `PathNormalizer`; a query after it is ignored).
    func match(_ request: RequestHead, path: Range<Int>) -> Route? {
        if isTrivial { return routes[0] }
        let b = request.bytes
        let host = request.hostField.map { hostName(b, request.fields[$0].value) } ?? 0..<0
        var best: Int? = nil
        var bestScore = (rank: -1, hostLength: -1, pathLength: -1)
        for (index, route) in routes.enumerated() {
            let rank: Int, hostLength: Int
            switch route.host {
            case .any:
                (rank, hostLength) = (0, 0)
            case .wildcard(let suffix):
                guard host.count > suffix.count, hasSuffix(b, host, suffix) else { continue }
                (rank, hostLength) = (1, suffix.count)
            case .exact(let name):
                guard host.count == name.count, hasSuffix(b, host, name) else { continue }
                (rank, hostLength) = (2, name.count)
            }
            guard pathMatches(b, path, route.path) else { continue }
            let score = (rank: rank, hostLength: hostLength, pathLength: route.path.count)
            if score > bestScore {
                best = index
                bestScore = score
            }
        }
        return best.map { routes[$0] }
    }

    /// The host name in a `Host` value: without the port, IPv6 brackets kept, and without the
    /// trailing dot of a fully qualified name (`admin.localhost.` is `admin.localhost`).
    private func hostName(_ b: [UInt8], _ value: Range<Int>) -> Range<Int> {
        var end = value.upperBound
        var i = value.upperBound
        while i > value.lowerBound {
            i -= 1
            if b[i] == UInt8(ascii: "]") { break }
            if b[i] == UInt8(ascii: ":") { end = i; break }
        }
        if end - value.lowerBound > 1 && b[end - 1] == UInt8(ascii: ".") { end -= 1 }
        return value.lowerBound..<end
    }

    /// Whether `b[range]` ends with `suffix` (lower-case), ignoring ASCII case.
    private func hasSuffix(_ b: [UInt8], _ range: Range<Int>, _ suffix: [UInt8]) -> Bool {
        var i = range.upperBound - suffix.count
        for c in suffix {
            var x = b[i]
            if x >= 0x41 && x <= 0x5A { x |= 0x20 }
            if x != c { return false }
            i += 1
        }
        return true
    }

    /// `/api` matches `/api`, `/api/…` and `/api?…` but not `/apix`; a prefix ending in `/`
    /// matches anything below it. Case-sensitive, as paths are.
    private func pathMatches(_ b: [UInt8], _ target: Range<Int>, _ prefix: [UInt8]) -> Bool {
        if prefix.count == 1 { return true }  // "/"
        guard target.count >= prefix.count else { return false }
        var i = target.lowerBound
        for c in prefix {
            if b[i] != c { return false }
            i += 1
        }
        if prefix.last == UInt8(ascii: "/") || i == target.upperBound { return true }
        // `;` too: `/admin;jsessionid=…` is `/admin` to servlet containers (path parameters), so
        // it must meet `/admin`'s route and policy.
        return b[i] == UInt8(ascii: "/") || b[i] == UInt8(ascii: "?") || b[i] == UInt8(ascii: ";")
    }
}

/// One pool as a worker sees it: its backends (with this worker's pools) and this worker's
/// balancer. Threading: one worker's loop.
final class Upstream {
    let name: String
    let backends: [Backend]
    var balancer: LoadBalancer
    /// The availability `balancer` was last told of (`noticeHealthChanges`).
    private var knownHealth: [Bool]
    let shared: SharedUpstream
    /// This worker's slab in `shared.stats`: requests routed here that got no backend.
    let stats: CounterSlab
    /// This worker's slab in `shared.retryStats`.
    let retryStats: CounterSlab
    /// The name as the access log writes it.
    let logName: LogName
    /// `try_when_all_down`'s turn: the backend the next such try starts looking from.
    var allDownTurn = 0

    init(shared: SharedUpstream, worker: Int, backends: [Backend], balance: BalanceConfig = BalanceConfig(), weights: [Int]? = nil) {
        self.shared = shared
        name = shared.name
        logName = LogName(shared.name)
        stats = shared.stats[worker]
        retryStats = shared.retryStats[worker]
        self.backends = backends
        knownHealth = backends.map(\.isAvailable)
        self.balance = balance
        let workers = max(shared.stats.count, 1)
        let limit = balance.maxConnectionsPerBackend
        for b in backends { b.requestLimit = limit == 0 ? 0 : (limit + workers - 1) / workers }
        defer { for b in backends { b.latestUpstream = self } }
        balancer = LoadBalancer(balance, backends: backends, weights: weights, upstreamName: shared.name,
                                ejectionDecision: shared.ejectionDecision)
        // Passive health turned off (by a reload): ejections in force end now.
        if !balance.outlierDetection.isEnabled { for b in backends { _ = b.shared.endEjection(nowNs: 0, force: true) } }
    }

    /// The upstream's balancing configuration (to rebuild the balancer when weights change).
    let balance: BalanceConfig

    // MARK: The queue (`max_connections_per_backend`)

    /// What a waiting request says when woken: it went on, it cannot use the room there is now
    /// (every backend it may take is still full: it keeps its place), or it is gone.
    enum WakeResult { case resumed, notNow, gone }

    /// Requests waiting for room on a backend, oldest first (tickets rise by one per entry, so an
    /// entry is found by arithmetic); a finished entry's closure is nil until the front passes it.
    /// Loop thread only.
    private var waiting: [(ticket: UInt64, wake: (() -> WakeResult)?)] = []
    private var waitingHead = 0
    private var nextTicket: UInt64 = 1
    /// Entries still waiting (what `queue.max` counts).
    private(set) var waitingCount = 0
    /// Wake-ups owed while one is being handed out (a woken request that fails at once releases
    /// and wakes again): drained by the outermost call, one after another, not by recursion.
    private var wakeupsOwed = 0
    private var waking = false

    /// Queues a request; nil when the queue is full.
    func enqueue(_ wake: @escaping () -> WakeResult) -> UInt64? {
        guard waitingCount < balance.queue.max else { return nil }
        let ticket = nextTicket
        nextTicket &+= 1
        waiting.append((ticket, wake))
        waitingCount += 1
        return ticket
    }

    /// A request left the queue on its own (timed out, abandoned).
    func dequeue(_ ticket: UInt64) {
        guard waitingHead < waiting.count, ticket >= waiting[waitingHead].ticket else { return }
        let i = waitingHead + Int(ticket - waiting[waitingHead].ticket)
        guard i < waiting.count, waiting[i].ticket == ticket, waiting[i].wake != nil else { return }
        waiting[i].wake = nil
        waitingCount -= 1
        compact()
    }

    /// A backend got room: the oldest waiting request that can use it goes on.
    func resumeWaiting() {
        wakeupsOwed += 1
        guard !waking else { return }
        waking = true
        defer { waking = false }
        while wakeupsOwed > 0 {
            wakeupsOwed -= 1
            var i = waitingHead
            while i < waiting.count {
                if let wake = waiting[i].wake {
                    let result = wake()
                    if result != .notNow {
                        waiting[i].wake = nil
                        waitingCount -= 1
                    }
                    if result == .resumed { break }
                }
                i += 1
            }
            compact()
        }
    }

    private func compact() {
        while waitingHead < waiting.count && waiting[waitingHead].wake == nil { waitingHead += 1 }
        if waitingHead == waiting.count { waiting.removeAll(keepingCapacity: true); waitingHead = 0 }
        else if waitingHead > 64 && waitingHead * 2 > waiting.count { waiting.removeFirst(waitingHead); waitingHead = 0 }
    }

    /// Ends the ejections that are due, then tells the balancer of availability changes since
    /// the last call — verdicts of the active checks, ejections begun or ended (the worker
    /// calls it on its sweep timer: no cost per request). Returns the backends that changed.
    @discardableResult
    func noticeHealthChanges(nowNs: UInt64 = Platform.monotonicNanos()) -> [Int] {
        var changed: [Int] = []
        for b in backends where b.shared.endEjection(nowNs: nowNs) {
            Log.info("backend \(b.id) of upstream \(name) is back from its ejection (outlier_detection)")
        }
        for (i, b) in backends.enumerated() where b.isAvailable != knownHealth[i] {
            knownHealth[i] = b.isAvailable
            changed.append(i)
        }
        if !changed.isEmpty { balancer.availabilityChanged(backends: backends) }
        // A weight set through the runtime API: a balancer with the new weights (its learnt
        // state — p2c estimates, the retry budget — starts over; weights change rarely).
        let weights = SlowStart.weights(backends.map(\.shared.effectiveWeight), availableSince: backends.map(\.shared.availableSince),
                                        now: nowNs, slowStartMs: balance.slowStartMs)
        if weights != balancer.weights {
            balancer = LoadBalancer(balance, backends: backends, weights: weights, upstreamName: name,
                                    ejectionDecision: shared.ejectionDecision)
        }
        return changed
    }
}
