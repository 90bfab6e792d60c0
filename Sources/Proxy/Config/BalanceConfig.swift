/// How an upstream spreads requests over its backends: `"balance"`, `"hash_key"` and
/// `"outlier_detection"` in an upstream object (at top level for the default pool, as
/// `health_check`).
public struct BalanceConfig: Sendable, Equatable {
    public var policy: BalancePolicy
    /// What `ring_hash` and `maglev` hash; required by them, refused by the others.
    public var hashKey: HashKey?
    /// Passive health (`"outlier_detection"`).
    public var outlierDetection = OutlierDetectionConfig()
    /// Retries of failed tries (`"retries"`).
    public var retries = RetriesConfig()
    /// Sticky sessions by cookie (`"sticky"`); nil: none.
    public var sticky: StickyConfig?
    /// Requests in flight per backend (`"max_connections_per_backend"`; 0: no limit), shared
    /// out among the workers (each takes its ceiling of limit ÷ workers); beyond it requests
    /// wait in `queue`.
    public var maxConnectionsPerBackend = 0
    public var queue = QueueConfig()
    /// A backend back from down or ejection, or newly added, ramps its share up over this long
    /// (`"slow_start_ms"`; 0: at once). Not for the hashing policies (it would move keys).
    public var slowStartMs = 0
    /// Backend host names (not IP literals) are looked up again this often, or at their records'
    /// TTL when shorter and known (`"resolve_interval_ms"`; 0: only at start and reload).
    public var resolveIntervalMs = 30_000
    /// `send_proxy_protocol`: 1 or 2 to start every connection to the backends with a PROXY
    /// protocol header of that version naming the client (health checks send a `LOCAL` one);
    /// 0: none.
    public var sendProxyProtocol = 0
    /// `try_when_all_down`: a request that finds every backend down still tries one connect
    /// (to a backend not disabled by the runtime API) before the 503, so a dev server that has
    /// just restarted answers at once instead of after the next probe. On in `--to` mode.
    public var tryWhenAllDown = false

    public init(policy: BalancePolicy = .roundRobin, hashKey: HashKey? = nil) {
        self.policy = policy
        self.hashKey = hashKey
    }
}

extension BalanceConfig {
    /// What `proxy --check` prints about an upstream's balancing.
    public var summary: [String] {
        var policyLine = "balance \(policy)" + (hashKey.map { " on \($0)" } ?? "")
        if let sticky { policyLine += ", sticky cookie \(sticky.cookie)" + (sticky.maxAgeS > 0 ? " (max-age \(sticky.maxAgeS) s)" : "") }
        if slowStartMs > 0 { policyLine += ", slow start \(slowStartMs) ms" }
        let o = outlierDetection
        let outlier = o.isEnabled
            ? "outlier detection: eject after \(o.consecutiveFailures) gateway failures in a row for \(o.baseEjectionMs) ms × times, at most \(o.maxEjectionPercent) %"
            : "outlier detection: off"
        let r = retries
        let retry = r.attempts == 0 || r.on.isEmpty
            ? "retries: none"
            : "retries: \(r.attempts) on \(r.on.map(\.rawValue).sorted().joined(separator: ","))"
                + (r.perTryTimeoutMs > 0 ? ", per try \(r.perTryTimeoutMs) ms" : "")
                + ", budget \(r.budgetPercent) % + \(r.minRetriesPerS)/s per worker"
        var lines = [policyLine, outlier, retry]
        if sendProxyProtocol != 0 {
            lines.append("connections to the backends start with a PROXY protocol v\(sendProxyProtocol) header (not pooled across clients)")
        }
        if tryWhenAllDown { lines.append("when every backend is down, a request still tries one connect before the 503") }
        if maxConnectionsPerBackend > 0 {
            lines.append("at most \(maxConnectionsPerBackend) requests per backend; queue \(queue.max), wait up to \(queue.timeoutMs) ms")
        }
        return lines
    }
}

/// The balancing policies (`"balance"`).
public enum BalancePolicy: String, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// In turn; smooth weighted (nginx's algorithm) when weights differ.
    case roundRobin = "round_robin"
    /// The fewest requests in flight (on this worker) relative to weight; ties broken randomly.
    case leastRequest = "least_request"
    /// Two random choices, the lower of peak-EWMA latency × (in flight + 1) ÷ weight.
    case p2cEWMA = "p2c_ewma"
    /// Random, in proportion to weight.
    case random
    /// Consistent hashing on a ring (Ketama-style points, more for heavier backends).
    case ringHash = "ring_hash"
    /// Consistent hashing through a Maglev lookup table (Google's Maglev, weighted as Envoy's).
    case maglev

    public var description: String { rawValue }

    /// Whether the policy needs `hash_key`.
    public var hashes: Bool { self == .ringHash || self == .maglev }
}

/// What a consistent-hashing policy hashes (`"hash_key"`). A request without it (no such header,
/// cookie or query parameter) is balanced round-robin.
public enum HashKey: Sendable, Equatable, CustomStringConvertible {
    /// The address of the client connection (what `X-Real-IP` says).
    case clientIP
    /// The request path, without the query.
    case path
    /// The first field of this name (stored lowercase).
    case header(String)
    /// The value of this cookie.
    case cookie(String)
    /// The value of this query parameter.
    case query(String)

    public var description: String {
        switch self {
        case .clientIP: "client_ip"
        case .path: "path"
        case .header(let name): "header:\(name)"
        case .cookie(let name): "cookie:\(name)"
        case .query(let name): "query:\(name)"
        }
    }

    /// `client_ip`, `path`, `header:NAME`, `cookie:NAME` or `query:NAME`; nil with the reason
    /// when `text` is none of them.
    public static func parse(_ text: String) -> Result<HashKey, HashKeyError> {
        switch text {
        case "client_ip": return .success(.clientIP)
        case "path": return .success(.path)
        default: break
        }
        guard let colon = text.firstIndex(of: ":") else { return .failure(HashKeyError(text)) }
        let kind = text[..<colon], name = String(text[text.index(after: colon)...])
        // Header and cookie names are tokens (RFC 9110 §5.6.2, RFC 6265 §4.1.1); a query
        // parameter name is anything but the separators.
        let fits = kind == "query"
            ? !name.isEmpty && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && !"&=#;+".utf8.contains($0) }
            : isToken(name)
        guard fits else { return .failure(HashKeyError(text)) }
        switch kind {
        case "header": return .success(.header(name.lowercased()))
        case "cookie": return .success(.cookie(name))
        case "query": return .success(.query(name))
        default: return .failure(HashKeyError(text))
        }
    }
}

public struct HashKeyError: Error, Sendable, Equatable {
    public let text: String
    init(_ text: String) { self.text = text }
}

/// Passive health (`"outlier_detection"`, per upstream and at top level): a backend whose
/// attempts fail `consecutive_failures` times in a row — refused or failed connections, resets,
/// timeouts, 5xx answers — is ejected for `base_ejection_ms` × the times it has been ejected in a
/// row (capped at 10×), but never more than `max_ejection_percent` of an upstream's backends at
/// once (rounded down: a one-backend upstream never ejects it). A success of the active health
/// check ends an ejection early, as Envoy's `successful_active_health_check_uneject_host`.
/// `consecutive_failures: 0` turns it off.
public struct OutlierDetectionConfig: Sendable, Equatable {
    public var consecutiveFailures = 5
    public var baseEjectionMs = 30_000
    public var maxEjectionPercent = 50

    public init() {}

    public var isEnabled: Bool { consecutiveFailures > 0 }
}

/// Retries of a request that went out and failed (`"retries"`, per upstream and at top level).
/// Only for requests that can run twice harmlessly — an idempotent method and no body — and
/// only while nothing of the response reached the client; always to a backend this request has
/// not tried. A connect failure is not a retry: nothing was sent, so any request moves on to the
/// next backend (up to `limits.max_upstream_attempts`), whatever `on` says.
///
/// The budget keeps retries from multiplying an overload (Finagle's and Linkerd's retry
/// budget): each request deposits `budget_percent` / 100 of a retry, `min_retries_per_s` more
/// accrue every second, a retry spends one, and at most 10 seconds' worth of the floor (and at
/// least 10) can be saved up. Kept per upstream on each worker.
public struct RetriesConfig: Sendable, Equatable {
    /// Retries after the first try (0: none).
    public var attempts = 1
    public var on: Set<RetryCondition> = [.reset]
    /// The response-head deadline of each try (0: `timeouts.upstream_ms` for the whole wait).
    public var perTryTimeoutMs = 0
    public var budgetPercent = 20
    public var minRetriesPerS = 10

    public init() {}
}

/// What a failed try must have met to be retried (`retries.on`).
public enum RetryCondition: String, Sendable, Equatable, CaseIterable, Hashable {
    /// Accepted for completeness: connect failures always move on to the next backend.
    case connectFailure = "connect_failure"
    /// The backend reset or closed the connection before a response head.
    case reset
    /// No response head within the (per-try) deadline.
    case timeout
    case status502 = "502"
    case status503 = "503"
    case status504 = "504"
}

/// Sticky sessions (`"sticky"`, per upstream and at top level): a cookie naming the backend that
/// answered — an opaque value, a hash of its URL, not its address — keeps a client on it while
/// it is available (whatever `balance` says); when it is not, the policy picks another and the
/// cookie is replaced. `max_age_s: 0` makes it a session cookie.
public struct StickyConfig: Sendable, Equatable {
    public var cookie = ""
    public var maxAgeS = 0

    public init(cookie: String = "", maxAgeS: Int = 0) {
        self.cookie = cookie
        self.maxAgeS = maxAgeS
    }
}

/// Where requests wait while every available backend is at `max_connections_per_backend`
/// (`"queue"`, HAProxy's server `maxconn` queue): first in, first out, at most `max` waiting per
/// upstream on each worker (one more gets 503 at once), each for at most `timeout_ms` (then 503).
public struct QueueConfig: Sendable, Equatable {
    public var max = 1000
    public var timeoutMs = 5000

    public init() {}
}

/// DNS servers to ask directly for backend host names (top-level `"resolver"`, nginx's
/// `resolver`) instead of the system resolver: answers carry TTLs, and neither `/etc/hosts` nor
/// search domains apply.
public struct ResolverConfig: Sendable, Equatable {
    /// `"127.0.0.1"`, `"127.0.0.1:5353"`, `"[::1]:53"`: IP literals, port 53 by default.
    public var servers: [String] = []
    /// How long one try waits for an answer (`"timeout_ms"`), and tries per server (`"attempts"`).
    public var timeoutMs = 2000
    public var attempts = 2

    public init() {}

    /// c-ares's server list (`127.0.0.1:53,[::1]:53`).
    public var serverList: String {
        servers.map { s in
            if s.hasPrefix("[") { return s.contains("]:") ? s : s + ":53" }
            if AddressSyntax.isIPv6(Substring(s)) { return "[\(s)]:53" }
            return s.contains(":") ? s : s + ":53"
        }.joined(separator: ",")
    }
}
