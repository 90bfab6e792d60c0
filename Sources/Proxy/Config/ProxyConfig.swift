import Glibc

/// The proxy's configuration: plain `Sendable` values, so one instance can be handed to every
/// worker thread as is. Every setting has a default; only `backends` must be given. The JSON
/// mapping and validation live in `ConfigLoader`.
public struct ProxyConfig: Sendable, Equatable {
    /// Where clients connect, and what is spoken there (never empty; `listen` is the first's
    /// address).
    public var listeners: [ListenerConfig]
    /// The upstream servers requests are balanced across: the pool named `default`, which gets
    /// every request no route matches. May be empty when `upstreams` and `routes` are given.
    public var backends: [BackendConfig]
    /// The default pool's health check, and the base every named upstream's own one starts from.
    public var healthCheck: HealthCheckConfig
    /// How the default pool balances (`balance`, `hash_key` at top level).
    public var balance = BalanceConfig()
    /// What every route checks before contacting a backend (`"policy"`; each route may replace
    /// its keys): see `PolicyConfig`.
    public var policy = PolicyConfig()
    /// Proxies in front of this one (`"trusted_proxies"`): a request from one of them is taken to
    /// be from the rightmost `X-Forwarded-For` address that is not one of them.
    public var trustedProxies: [AddressRange] = []
    /// DNS servers asked directly for backend host names (`"resolver"`); nil: the system resolver.
    public var resolver: ResolverConfig?
    /// The Redis server `scope: "global"` rate limits count in (`"redis"`); nil: none.
    public var redis: RedisConfig?
    /// Named pools, for `routes`.
    public var upstreams: [UpstreamConfig]
    public var routes: [RouteConfig]
    /// How paths are normalised for matching `routes`, and what backends receive.
    public var pathNormalization = PathNormalizationConfig()
    public var timeouts: TimeoutsConfig
    public var limits: LimitsConfig
    public var pool: PoolConfig
    /// Worker loops (threads), each with its own listener, pools and connections; 0 means one
    /// per CPU the process may run on.
    public var workers: Int
    /// How long a graceful shutdown (SIGTERM, SIGINT) waits for exchanges in flight before
    /// closing what is left.
    public var shutdownGraceMs: Int
    /// One line per request; on stdout in the combined format unless set otherwise.
    public var accessLog: AccessLogConfig
    /// The proxy's own endpoints: health, metrics, status page.
    public var admin: AdminConfig
    /// How often TLS session tickets get a fresh key (the two before it still resume, so a
    /// ticket lives up to twice this); 0: tickets (resumption) off.
    public var tlsTicketKeyRotationS = 3600
    /// TLS settings for the top-level `backends` that are `https://`.
    public var backendTLS = BackendTLSConfig()
    /// HTTP/2 towards clients.
    public var http2 = HTTP2Config()
    /// `compress` (nil: responses pass as the backends sent them); a route's own replaces it.
    public var compress: CompressionConfig?
    /// `inspect`: the request inspector (off unless enabled; on in `--to` mode).
    public var inspect = InspectConfig()

    /// All defaults and no backends (a loaded config always has at least one).
    public init(
        listen: ListenAddress = ListenAddress(host: ListenAddress.allInterfaces, port: 8080),
        backends: [BackendConfig] = [],
        healthCheck: HealthCheckConfig = HealthCheckConfig(),
        timeouts: TimeoutsConfig = TimeoutsConfig(),
        limits: LimitsConfig = LimitsConfig(),
        pool: PoolConfig = PoolConfig(),
        workers: Int = 0,
        shutdownGraceMs: Int = 30000,
        upstreams: [UpstreamConfig] = [],
        routes: [RouteConfig] = [],
        accessLog: AccessLogConfig = AccessLogConfig(),
        admin: AdminConfig = AdminConfig()
    ) {
        self.accessLog = accessLog
        self.admin = admin
        self.upstreams = upstreams
        self.routes = routes
        self.workers = workers
        self.shutdownGraceMs = shutdownGraceMs
        self.listeners = [ListenerConfig(address: listen)]
        self.backends = backends
        self.healthCheck = healthCheck
        self.timeouts = timeouts
        self.limits = limits
        self.pool = pool
    }
}

/// A host and port to listen on.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    /// An IPv4 address, an IPv6 address without brackets, or a host name to resolve.
    public var host: String
    /// 0 asks the kernel for a free port (tests use this).
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `host:port`, or `[v6]:port` so the text parses back with `parse(_:)`.
    public var description: String { AddressSyntax.join(host: host, port: port) }

    /// Parses `host:port`, `:port` (all IPv4 interfaces, 0.0.0.0) or `[v6]:port`, port 0–65535.
    /// Used for the config's `listen` and the command line's `--listen`; both report failures
    /// with the reason from `parseExplained(_:)`.
    public static func parse(_ s: String) -> ListenAddress? {
        try? parseExplained(s)
    }

    /// What `:port` binds to: every IPv4 interface.
    public static let allInterfaces = "0.0.0.0"

    /// The accepted forms, for messages.
    static let expectedForms = "\"host:port\", \":port\" or \"[IPv6]:port\" (port 0-65535)"

    /// `parse(_:)` that says what is wrong.
    static func parseExplained(_ s: String) throws(AddressSyntaxError) -> ListenAddress {
        if s.hasPrefix(":"), s.dropFirst().firstIndex(of: ":") == nil {
            guard let port = AddressSyntax.port(s.dropFirst(), allowZero: true) else {
                throw AddressSyntaxError(AddressSyntax.portProblem(s.dropFirst(), allowZero: true))
            }
            return ListenAddress(host: allInterfaces, port: port)
        }
        if AddressSyntax.isDigits(s) {
            throw AddressSyntaxError("missing ':' before the port; write \":\(s)\" (every interface with a config file, loopback with --to)")
        }
        let (host, port) = try AddressSyntax.hostAndPort(s[...], allowZeroPort: true)
        guard let port else {
            throw AddressSyntaxError("missing the port (add \":8080\", or \":0\" for any free port)")
        }
        return ListenAddress(host: host, port: port)
    }
}

/// One upstream server.
public struct BackendConfig: Sendable, Equatable {
    /// Unique name used in logs and status output; defaults to `backend<N>` (1-based position).
    public var id: String
    /// The URL exactly as configured, for messages.
    public var url: String
    /// Host name or IP address (IPv6 without brackets) to connect to.
    public var host: String
    public var port: UInt16
    /// How to speak TLS to an `https://` backend; nil for `http://`.
    public var tls: BackendTLSConfig?
    /// Its share of the upstream's requests relative to the others (`weight`, default 1).
    public var weight: Int
    /// A static route's files (`StaticFilesConfig`): this backend is answered from them, not
    /// connected to. Nil for every real backend.
    public var staticFiles: StaticFilesConfig?

    /// Whether `host` is an IP address (never looked up) rather than a name.
    public var hasIPLiteralHost: Bool { AddressSyntax.isIPLiteral(host) }

    public init(id: String, url: String, host: String, port: UInt16, tls: BackendTLSConfig? = nil, weight: Int = 1) {
        self.tls = tls
        self.weight = weight
        self.id = id
        self.url = url
        self.host = host
        self.port = port
    }

    /// Splits `http://host[:port][/]` (default port 80) or `https://…` (443) into host, port and
    /// whether it speaks TLS.
    ///
    /// Anything the proxy would silently ignore or misuse is rejected instead: a path (requests are
    /// forwarded with their own path), a query or fragment, credentials, and other schemes — `https`
    /// in particular, since connecting in plain text to a TLS port would fail confusingly later.
    static func parseURL(_ url: String) throws(AddressSyntaxError) -> (host: String, port: UInt16, tls: Bool) {
        guard let schemeEnd = url.firstRange(of: "://") else {
            let hint = url.contains("/") || url.isEmpty ? "" : " (add \"http://\" in front)"
            throw AddressSyntaxError(
                "expected an http URL like \"http://localhost:3001\", got \(JSONValue.quoted(url))\(hint)")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else {
            throw AddressSyntaxError("unsupported scheme \(JSONValue.quoted(scheme)); use http:// or https://")
        }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let tail = rest[authorityEnd...]
        if tail.contains("?") || tail.contains("#") {
            throw AddressSyntaxError("a backend URL cannot have a query or fragment, got \(JSONValue.quoted(url))")
        }
        guard tail.isEmpty || tail == "/" else {
            throw AddressSyntaxError("a backend URL cannot have a path (\(JSONValue.quoted(String(tail)))); "
                + "requests are forwarded with their own path, so remove it")
        }
        if authority.contains("@") {
            throw AddressSyntaxError("credentials in a backend URL (\"user@\") are not supported")
        }
        let (host, port) = try AddressSyntax.hostAndPort(authority, allowZeroPort: false)
        return (host, port ?? (scheme == "https" ? 443 : 80), scheme == "https")
    }
}

/// How the proxy speaks TLS to a backend (`tls` on a backend or upstream, `backend_tls` for the
/// top-level backends). Paths are relative to the config file's directory.
public struct BackendTLSConfig: Sendable, Hashable {
    /// CA certificates (PEM) to verify the backend against; nil: the system's store.
    public var ca: String?
    /// false accepts any certificate (logged as a warning at start and reload).
    public var verify: Bool
    /// The name sent as SNI and verified; nil: the URL's host.
    public var serverName: String?
    /// A client certificate and key for backends that require one (mutual TLS).
    public var cert: String?
    public var key: String?

    public init(ca: String? = nil, verify: Bool = true, serverName: String? = nil, cert: String? = nil, key: String? = nil) {
        self.ca = ca
        self.verify = verify
        self.serverName = serverName
        self.cert = cert
        self.key = key
    }
}

/// Active health checking: each backend is probed with `GET path` every `intervalMs`.
public struct HealthCheckConfig: Sendable, Equatable {
    /// Request target of the probe; a 2xx answer counts as healthy. `nil` (`"path": null`) probes
    /// by connecting only: for servers without a health URL (dev servers).
    public var path: String?
    public var intervalMs: Int
    /// A probe that takes longer counts as failed.
    public var timeoutMs: Int
    /// Consecutive successes before an unhealthy backend gets traffic again.
    public var healthyThreshold: Int
    /// Consecutive failures before a healthy backend is taken out (one failure is often a blip).
    public var unhealthyThreshold: Int

    public init(
        path: String? = "/health", intervalMs: Int = 5000, timeoutMs: Int = 2000,
        healthyThreshold: Int = 2, unhealthyThreshold: Int = 3
    ) {
        self.path = path
        self.intervalMs = intervalMs
        self.timeoutMs = timeoutMs
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
    }
}

/// Time limits, all in milliseconds.
public struct TimeoutsConfig: Sendable, Equatable {
    /// Establishing a TCP connection to a backend.
    public var connectMs: Int
    /// The whole wait for a response head once the request is sent (then 504). Interim
    /// responses (100 Continue, 103) do not extend it; a long poll needs a route with a longer one.
    public var upstreamMs: Int
    /// The longest silence between bytes of a response body (then the client's connection is cut:
    /// its response has begun). nginx's `proxy_read_timeout` is 60 s too.
    public var responseIdleMs: Int = 60000
    /// The same for `text/event-stream` responses (Server-Sent Events), which may be silent for
    /// minutes between events: an hour, like tunnels.
    public var eventStreamIdleMs: Int = 3_600_000
    /// A client sending a complete request head; bounds slow-header (slowloris) attacks.
    public var clientHeaderMs: Int
    /// A keep-alive client connection with no request in flight is closed after this long.
    public var idleMs: Int
    /// A tunnel (WebSocket or another upgrade) with no byte either way is closed after this long.
    /// Long on purpose: a WebSocket is often silent for minutes.
    public var tunnelIdleMs: Int
    /// A client sending a request body may pause this long between bytes (then 408 and close),
    /// so a stalled upload cannot hold a backend connection forever. nginx's default is 60 s too.
    public var clientBodyMs: Int

    public init(connectMs: Int = 5000, upstreamMs: Int = 30000, clientHeaderMs: Int = 10000, idleMs: Int = 60000,
                clientBodyMs: Int = 60000, tunnelIdleMs: Int = 3_600_000) {
        self.tunnelIdleMs = tunnelIdleMs
        self.connectMs = connectMs
        self.upstreamMs = upstreamMs
        self.clientHeaderMs = clientHeaderMs
        self.idleMs = idleMs
        self.clientBodyMs = clientBodyMs
    }
}

/// Request-head size limits; beyond them the client gets 414 or 431.
public struct LimitsConfig: Sendable, Equatable {
    /// Bytes in a request head (start line, fields, blank line).
    public var maxHeadBytes: Int
    /// Bytes in a request target (path and query).
    public var maxTargetBytes: Int
    /// Header fields in one request.
    public var maxHeaderCount: Int
    /// Bytes in one request body; 0 means unlimited (then 413). A `Content-Length` above it is
    /// refused before any body byte is read; a chunked body is cut off when it grows past it.
    public var maxBodyBytes: Int
    /// Methods the proxy forwards; empty means any valid token. Others get 405 with `Allow`.
    public var allowedMethods: [String]
    /// Open client connections at most (all workers together); beyond it the proxy stops
    /// accepting and new connections wait in the kernel's listen queue. `nil` (the default):
    /// derived from the file-descriptor limit (`ConnectionBudget`).
    public var maxConnections: Int?
    /// Upstream connections one request may try at most: connect failover to other backends and
    /// the keep-alive-race retry together (HAProxy's default `retries 3` is four tries too).
    public var maxUpstreamAttempts: Int = 4
    /// Interim responses (1xx but 101) relayed for one request at most; one more is a 502. A
    /// backend would otherwise be free to send an endless stream of `100 Continue`.
    public var maxInterimResponses: Int = 16

    /// Defaults are the parser's own (`HeadLimits`), stated once there.
    public init(maxHeadBytes: Int = HeadLimits().maxHeadBytes, maxTargetBytes: Int = HeadLimits().maxTargetBytes,
                maxHeaderCount: Int = HeadLimits().maxHeaderCount, maxBodyBytes: Int = 0,
                allowedMethods: [String] = [], maxConnections: Int? = nil) {
        self.maxBodyBytes = maxBodyBytes
        self.allowedMethods = allowedMethods
        self.maxConnections = maxConnections
        self.maxHeadBytes = maxHeadBytes
        self.maxTargetBytes = maxTargetBytes
        self.maxHeaderCount = maxHeaderCount
    }
}

/// Here rather than in `HTTP/`: the parser knows nothing of the config (the layering rule,
/// `Scripts/check-layering.sh`).
extension HeadLimits {
    /// The limits a config's `"limits"` section sets.
    public init(_ config: LimitsConfig) {
        self.init(maxHeadBytes: config.maxHeadBytes, maxTargetBytes: config.maxTargetBytes,
                  maxHeaderCount: config.maxHeaderCount)
    }
}

/// Reuse of idle upstream connections.
public struct PoolConfig: Sendable, Equatable {
    /// How long an idle upstream connection is kept. The default, 4 s, stays below Node's 5 s
    /// keep-alive timeout so the proxy closes first instead of reusing a socket the backend is
    /// closing (which would surface as random 502s).
    public var idleTimeoutMs: Int
    /// Idle connections kept per backend (per worker); 0 turns pooling off. The default keeps
    /// every connection a burst needed: idle connections count against `limits.max_connections`
    /// and are closed first when clients need the room (`ConnectionCount`), so the descriptor
    /// budget bounds them. A cap below the concurrency turns every surplus request into a new
    /// connection (HTTP/2 multiplies it: 64 clients × 100 streams went from 40,991 to 12,619
    /// requests/s with a cap of 1024).
    public var maxIdlePerBackend: Int

    public init(idleTimeoutMs: Int = 4000, maxIdlePerBackend: Int = 100_000) {
        self.idleTimeoutMs = idleTimeoutMs
        self.maxIdlePerBackend = maxIdlePerBackend
    }
}

// MARK: - Address syntax shared by `listen`, `--listen` and backend URLs

/// Why a listen address or backend URL was rejected (a phrase; callers add the field or flag).
struct AddressSyntaxError: Error, Sendable {
    var problem: String
    init(_ problem: String) { self.problem = problem }
}

/// Host and port syntax, written once for every place an address is accepted.
enum AddressSyntax {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without brackets.
    /// The port is optional here: `listen` requires one, URLs default to 80.
    static func hostAndPort(_ s: Substring, allowZeroPort: Bool) throws(AddressSyntaxError) -> (host: String, port: UInt16?) {
        let hostText: Substring
        let portText: Substring?
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else {
                throw AddressSyntaxError("missing ']' after the IPv6 address in \(JSONValue.quoted(String(s)))")
            }
            hostText = s[s.index(after: s.startIndex)..<close]
            let after = s[s.index(after: close)...]
            if after.isEmpty {
                portText = nil
            } else if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else {
                throw AddressSyntaxError("expected ':' and a port after ']' in \(JSONValue.quoted(String(s)))")
            }
            guard isIPv6(hostText) else {
                throw AddressSyntaxError("\(JSONValue.quoted(String(hostText))) is not a valid IPv6 address")
            }
        } else {
            let colons = s.filter { $0 == ":" }.count
            if colons > 1 {
                throw AddressSyntaxError("IPv6 addresses must be in brackets, like \"[::1]:8080\"")
            }
            if let colon = s.firstIndex(of: ":") {
                hostText = s[..<colon]
                portText = s[s.index(after: colon)...]
            } else {
                hostText = s
                portText = nil
            }
            try checkHostName(hostText)
        }
        guard let portText else { return (String(hostText), nil) }
        guard let port = port(portText, allowZero: allowZeroPort) else {
            throw AddressSyntaxError(portProblem(portText, allowZero: allowZeroPort))
        }
        return (String(hostText), port)
    }

    /// A port written as 1–5 plain digits (no sign, no spaces) within range.
    static func port(_ text: Substring, allowZero: Bool) -> UInt16? {
        guard text.count <= 5, isDigits(text), let value = UInt16(text), allowZero || value != 0 else { return nil }
        return value
    }

    /// Non-empty and ASCII digits only.
    static func isDigits(_ text: some StringProtocol) -> Bool {
        !text.isEmpty && text.allSatisfy(isDigit)
    }

    /// `0`–`9` (`Character.isNumber` alone also accepts "٣" or "½").
    private static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }

    static func portProblem(_ text: Substring, allowZero: Bool) -> String {
        if text.isEmpty { return "missing the port number after ':'" }
        return "the port must be a number from \(allowZero ? 0 : 1) to 65535, got \(JSONValue.quoted(String(text)))"
    }

    /// `host:port`, bracketing IPv6 addresses.
    static func join(host: String, port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Host names may use letters, digits, '-', '.' and '_' (not valid in DNS, but common in
    /// container service names that `getaddrinfo` resolves). Anything made of digits and dots must
    /// be a real IPv4 address, so a typo like `127.0.0.300` is caught here rather than sent to DNS.
    private static func checkHostName(_ host: Substring) throws(AddressSyntaxError) {
        guard !host.isEmpty else { throw AddressSyntaxError("missing the host") }
        if host.allSatisfy({ $0 == "." || isDigit($0) }) {
            guard isIPv4(host) else {
                throw AddressSyntaxError("\(JSONValue.quoted(String(host))) is not a valid IPv4 address")
            }
            return
        }
        let valid = host.count <= 253 && !host.hasPrefix(".") && !host.contains("..")
            && host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }
        guard valid else {
            throw AddressSyntaxError("\(JSONValue.quoted(String(host))) is not a valid host name "
                + "(letters, digits, '-', '.' and '_' only)")
        }
    }

    /// An IPv4 or IPv6 address (no brackets), as opposed to a host name to look up.
    static func isIPLiteral(_ host: String) -> Bool { isIPv4(Substring(host)) || isIPv6(Substring(host)) }

    static func isIPv4(_ s: Substring) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, String(s), &address) == 1
    }

    static func isIPv6(_ s: Substring) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, String(s), &address) == 1
    }
}
