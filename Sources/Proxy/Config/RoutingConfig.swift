/// A named pool of backends with its own health check: what a route sends requests to.
/// The top-level `backends` form the pool named `default`.
public struct UpstreamConfig: Sendable, Equatable {
    public var name: String
    public var backends: [BackendConfig]
    public var healthCheck: HealthCheckConfig
    /// How requests are spread over the backends (`balance`, `hash_key`).
    public var balance: BalanceConfig

    public init(name: String, backends: [BackendConfig], healthCheck: HealthCheckConfig, balance: BalanceConfig = BalanceConfig()) {
        self.name = name
        self.backends = backends
        self.healthCheck = healthCheck
        self.balance = balance
    }

    /// The name of the pool made of the top-level `backends`.
    public static let defaultName = "default"
}

/// Which request hosts a route applies to.
public enum HostMatch: Sendable, Equatable, CustomStringConvertible {
    case any
    /// One host name, lower-case, without port.
    case exact(String)
    /// `*.example.com`: stored as the suffix `.example.com` (lower-case); matches any name ending
    /// in it, not `example.com` itself.
    case wildcard(String)

    public var description: String {
        switch self {
        case .any: "*"
        case .exact(let host): host
        case .wildcard(let suffix): "*" + suffix
        }
    }
}

/// What `Host` the backend receives.
public enum HostHeaderPolicy: Sendable, Equatable, CustomStringConvertible {
    /// The client's `Host`, unchanged (the default).
    case preserve
    /// The backend's own `host:port` from its URL: dev servers such as Vite refuse unknown hosts.
    case backend
    /// This value.
    case literal(String)

    public var description: String {
        switch self {
        case .preserve: "preserve"
        case .backend: "backend"
        case .literal(let value): value
        }
    }
}

/// One entry of `routes`: requests whose host and path match go to `upstream`.
///
/// Among the routes that match, the most specific host wins (exact, then the longest wildcard,
/// then any host); among those, the longest path prefix; then the earliest route.
public struct RouteConfig: Sendable, Equatable {
    public var host: HostMatch
    /// A path prefix starting with "/". `/api` matches `/api`, `/api/…` and `/api?…`, not `/apix`;
    /// `/` matches everything.
    public var path: String
    public var upstream: String
    /// Remove `path` from the forwarded target (then `X-Forwarded-Prefix` carries it).
    public var stripPrefix: Bool
    public var hostHeader: HostHeaderPolicy
    /// This route's own response deadlines, where they differ from the top-level `timeouts`
    /// (a long poll needs a longer `upstream_ms`, a slow report a longer `response_idle_ms`).
    public var timeouts = RouteTimeoutsConfig()
    /// This route's own policy keys (the top-level `policy` fills in the others).
    public var policy = PolicyConfig()
    /// `"static"`: the route is answered from files (its `upstream` is the loader's
    /// `static:ROUTE` pool).
    public var staticFiles: StaticFilesConfig?
    /// `"compress"` on the route: its own settings, `false` for none, or (absent) the top level's.
    public var compress = RouteCompression.inherit

    public init(host: HostMatch = .any, path: String = "/", upstream: String, stripPrefix: Bool = false,
                hostHeader: HostHeaderPolicy = .preserve) {
        self.host = host
        self.path = path
        self.upstream = upstream
        self.stripPrefix = stripPrefix
        self.hostHeader = hostHeader
    }

    /// The route as metrics and shared rate-limit keys name it: its host (when it has one) and
    /// path, as written.
    public var label: String { (host == .any ? "" : "\(host)") + path }

    /// `path` without a trailing slash: what `strip_prefix` removes and `X-Forwarded-Prefix` says.
    public var strippedPrefix: String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p == "/" ? "" : p
    }
}

/// A route's `timeouts`: the response deadlines it may set for itself; `nil` keeps the top-level one.
public struct RouteTimeoutsConfig: Sendable, Equatable {
    public var upstreamMs: Int?
    public var responseIdleMs: Int?
    public var eventStreamIdleMs: Int?

    public init(upstreamMs: Int? = nil, responseIdleMs: Int? = nil, eventStreamIdleMs: Int? = nil) {
        self.upstreamMs = upstreamMs
        self.responseIdleMs = responseIdleMs
        self.eventStreamIdleMs = eventStreamIdleMs
    }

    /// `base` with this route's values in place of its own.
    public func applied(to base: TimeoutsConfig) -> TimeoutsConfig {
        var t = base
        if let upstreamMs { t.upstreamMs = upstreamMs }
        if let responseIdleMs { t.responseIdleMs = responseIdleMs }
        if let eventStreamIdleMs { t.eventStreamIdleMs = eventStreamIdleMs }
        return t
    }
}

/// `path_normalization`: how a request path is brought to the normal form routes are matched on,
/// and what the backend then receives (see `PathNormalizer` for the steps).
public struct PathNormalizationConfig: Sendable, Equatable {
    /// What `%2F` and `%5C` in a path do (Envoy's `path_with_escaped_slashes_action`).
    public enum EscapedSlashes: String, Sendable, Equatable, CaseIterable {
        /// Stay encoded, inside their segment, for matching and forwarding (the default).
        case keep
        /// 400.
        case reject
        /// Both become `/` for matching (and for forwarding with `forward: normalized`).
        case decode
    }

    /// Which target the backend gets.
    public enum Forward: String, Sendable, Equatable, CaseIterable {
        /// The bytes the client sent (the default; signed URLs depend on it).
        case original
        /// The normal form of the path, with the query unchanged.
        case normalized
    }

    /// `//` counts as `/` (nginx's `merge_slashes`).
    public var mergeSlashes: Bool
    public var escapedSlashes: EscapedSlashes
    public var forward: Forward

    public init(mergeSlashes: Bool = true, escapedSlashes: EscapedSlashes = .keep, forward: Forward = .original) {
        self.mergeSlashes = mergeSlashes
        self.escapedSlashes = escapedSlashes
        self.forward = forward
    }

    /// The normaliser these settings describe.
    public var normalizer: PathNormalizer {
        let escaped: PathNormalizer.EscapedSlashes = switch escapedSlashes {
        case .keep: .keep
        case .reject: .reject
        case .decode: .decode
        }
        return PathNormalizer(mergeSlashes: mergeSlashes, escapedSlashes: escaped)
    }
}

extension ProxyConfig {
    /// Every pool: `default` (the top-level `backends`, when there are any) first, then the named
    /// `upstreams` in file order.
    public var allUpstreams: [UpstreamConfig] {
        let named = upstreams
        guard !backends.isEmpty else { return named }
        return [UpstreamConfig(name: UpstreamConfig.defaultName, backends: backends, healthCheck: healthCheck, balance: balance)] + named
    }

    /// Every backend of every pool.
    public var allBackends: [BackendConfig] { allUpstreams.flatMap(\.backends) }

    /// The routing table as `proxy --check` prints it, most specific first as matching sees it.
    public var routingTable: [String] {
        var lines = routes.map { r in
            var line = "route host \(r.host) path \(r.path) -> \(r.upstream)"
            if r.stripPrefix { line += " (strip_prefix)" }
            if r.hostHeader != .preserve { line += " (host_header \(r.hostHeader))" }
            return line
        }
        lines.append(backends.isEmpty ? "anything else -> 404" : "anything else -> \(UpstreamConfig.defaultName)")
        return lines
    }
}
