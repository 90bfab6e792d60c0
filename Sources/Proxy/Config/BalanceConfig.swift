/// How an upstream spreads requests over its backends: `"balance"`, `"hash_key"` and
/// `"outlier_detection"` in an upstream object (at top level for the default pool, as
/// `health_check`).
public struct BalanceConfig: Sendable, Equatable {
    public var policy: BalancePolicy
    /// What `ring_hash` and `maglev` hash; required by them, refused by the others.
    public var hashKey: HashKey?
    /// Passive health (`"outlier_detection"`).
    public var outlierDetection = OutlierDetectionConfig()

    public init(policy: BalancePolicy = .roundRobin, hashKey: HashKey? = nil) {
        self.policy = policy
        self.hashKey = hashKey
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
        let token = "!#$%&'*+-.^_`|~".utf8
        let isToken = { (c: UInt8) in (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7A) || token.contains(c) }
        let fits: (UInt8) -> Bool = kind == "query"
            ? { $0 > 0x20 && $0 < 0x7F && !"&=#;+".utf8.contains($0) }
            : isToken
        guard !name.isEmpty, name.utf8.allSatisfy(fits) else { return .failure(HashKeyError(text)) }
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
