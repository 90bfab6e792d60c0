import Glibc

/// What a route lets through before any backend is contacted (issue 16): the keys of the
/// top-level `"policy"` object, which applies to every route, and of each route, whose keys
/// replace the top-level ones key by key. Checked in this order: `allow`/`deny` (403), then
/// `allowed_methods` (405), then `max_body_bytes` (413).
///
/// nil: not set here (inherit, or no limit at the top level).
public struct PolicyConfig: Sendable, Equatable {
    /// Client addresses let in (`"allow": ["10.0.0.0/8"]`); nil or empty: everyone not denied.
    public var allow: [AddressRange]?
    /// Client addresses refused (`"deny"`), checked first: a denied address is refused even when
    /// an `allow` range holds it.
    public var deny: [AddressRange]?
    /// Methods this route accepts (case-sensitive, as methods are; `GET` brings `HEAD`); others
    /// get 405 with `Allow`. `[]`: any method (lifts a top-level list).
    public var allowedMethods: [String]?
    /// Largest request body this route accepts; a larger `Content-Length` gets 413 before the body
    /// is read, and a chunked body that grows past it is cut off with 413.
    public var maxBodyBytes: Int?
    /// Fields set on (replacing any the client sent) and removed from the request to the backend.
    public var requestHeaders: HeaderRulesConfig?
    /// Fields set on (replacing the backend's) and removed from the response to the client.
    public var responseHeaders: HeaderRulesConfig?
    /// Adds `X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options` (and HSTS on TLS)
    /// to responses that do not carry them.
    public var securityHeaders: Bool?
    /// Cross-origin requests from browsers: preflights answered by the proxy, the response
    /// fields added (`Vary: Origin` on every response of the route). No `origins`: off (a route's
    /// `"cors": false`).
    public var cors: CORSConfig?
    /// Requests per key and window (`RateLimitConfig`).
    public var rateLimit: RateLimitConfig?
    /// Who may use the route (`AuthConfig`).
    public var auth: AuthConfig?

    public init() {}

    /// This policy's keys, with `base`'s where this one does not set them.
    public func merged(over base: PolicyConfig) -> PolicyConfig {
        var out = self
        if out.allow == nil { out.allow = base.allow }
        if out.deny == nil { out.deny = base.deny }
        if out.allowedMethods == nil { out.allowedMethods = base.allowedMethods }
        if out.maxBodyBytes == nil { out.maxBodyBytes = base.maxBodyBytes }
        if out.requestHeaders == nil { out.requestHeaders = base.requestHeaders }
        if out.responseHeaders == nil { out.responseHeaders = base.responseHeaders }
        if out.securityHeaders == nil { out.securityHeaders = base.securityHeaders }
        if out.cors == nil { out.cors = base.cors }
        if out.rateLimit == nil { out.rateLimit = base.rateLimit }
        if out.auth == nil { out.auth = base.auth }
        return out
    }
}

/// `"cors": {"origins": ["https://app.example"], "methods": ["GET", "POST"], "headers": ["Authorization"],
/// "expose_headers": [], "credentials": true, "max_age_s": 600}` (the Fetch standard's CORS protocol).
public struct CORSConfig: Sendable, Equatable {
    /// Origins allowed (`https://app.example`, as browsers send them), or `["*"]` (any, without
    /// credentials).
    public var origins: [String] = []
    /// Methods and request fields a preflight may ask for (`["*"]`: any, without credentials).
    public var methods: [String] = ["GET", "HEAD", "POST"]
    public var headers: [String] = []
    /// Response fields scripts may read beyond the safelisted ones.
    public var exposeHeaders: [String] = []
    /// Cookies and `Authorization` may come along (`Access-Control-Allow-Credentials: true`).
    public var credentials = false
    /// How long a browser may cache a preflight's answer (nil: its default, 5 s).
    public var maxAgeS: Int?

    public init() {}

    public var anyOrigin: Bool { origins == ["*"] }
}

/// `{"set": {"X-Env": "prod", "X-Client": "{client_ip}"}, "remove": ["X-Debug"]}`: fields to set
/// (replacing any of that name) and to remove. Values may hold `{client_ip}`, `{request_id}` and
/// `{host}`.
public struct HeaderRulesConfig: Sendable, Equatable {
    public struct Setting: Sendable, Equatable {
        public var name: String
        public var value: String
    }
    public var assignments: [Setting] = []
    public var remove: [String] = []

    public init() {}

    public var isEmpty: Bool { assignments.isEmpty && remove.isEmpty }

    /// The placeholders a value may hold.
    public static let placeholders = ["client_ip", "request_id", "host"]
}

/// An IPv4 or IPv6 address range in CIDR form (`10.0.0.0/8`, `fd00::/8`; a bare address is one
/// address). An IPv4-mapped IPv6 client (`::ffff:10.1.2.3`, what a dual-stack listener reports)
/// is matched as the IPv4 address it carries.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// The network's address bytes (4 or 16), host bits cleared.
    public let network: [UInt8]
    public let prefixLength: Int
    public let description: String

    /// Parses `address[/length]`; nil when it is not one, with `problem` saying why.
    static func parse(_ text: String) -> Result<AddressRange, AddressSyntaxError> {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let address = String(parts[0])
        var bytes: [UInt8]
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, address, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return .failure(AddressSyntaxError("\(JSONValue.quoted(text)) is not an IP address or CIDR range (\"10.0.0.0/8\", \"::1\")"))
        }
        var length = bytes.count * 8
        if parts.count == 2 {
            guard let n = Int(parts[1]), parts[1].allSatisfy(\.isNumber), (0...bytes.count * 8).contains(n) else {
                return .failure(AddressSyntaxError("\(JSONValue.quoted(text)): the prefix length must be 0 to \(bytes.count * 8)"))
            }
            length = n
        }
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it spells: clients are
        // compared as IPv4 when mapped, so it would otherwise never match.
        if bytes.count == 16 && length >= 96 && bytes.prefix(10).allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            bytes = Array(bytes.suffix(4))
            length -= 96
        }
        for i in bytes.indices {
            let keep = max(0, min(8, length - i * 8))
            bytes[i] &= keep == 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return .success(AddressRange(network: bytes, prefixLength: length, description: text))
    }

    private init(network: [UInt8], prefixLength: Int, description: String) {
        self.network = network
        self.prefixLength = prefixLength
        self.description = description
    }

    /// Whether `address` (4 or 16 bytes) is in the range.
    public func contains(_ address: ArraySlice<UInt8>) -> Bool {
        var a = address
        // An IPv4-mapped IPv6 address is its IPv4 address (for IPv6 ranges too: `::/0` is not
        // meant to hold every IPv4 client of a dual-stack listener).
        if a.count == 16 && a.prefix(10).allSatisfy({ $0 == 0 })
            && a[a.startIndex + 10] == 0xFF && a[a.startIndex + 11] == 0xFF {
            a = a.suffix(4)
        }
        guard a.count == network.count else { return false }
        var bits = prefixLength
        var i = 0
        for byte in a {
            if bits <= 0 { return true }
            let mask: UInt8 = bits >= 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if byte & mask != network[i] { return false }
            bits -= 8
            i += 1
        }
        return true
    }
}

extension PolicyConfig {
    /// The policy in words, one part per key set (empty: none), for `--check`.
    public var summaryParts: [String] {
        var parts: [String] = []
        if let allow, !allow.isEmpty { parts.append("allow \(allow.map(\.description).joined(separator: " "))") }
        if let deny, !deny.isEmpty { parts.append("deny \(deny.map(\.description).joined(separator: " "))") }
        if let auth, !auth.isOff {
            if let basic = auth.basic { parts.append("auth basic (\(basic.users.count) users from \(basic.htpasswd), realm \"\(basic.realm)\")") }
            if let jwt = auth.jwt {
                let keys = jwt.remote.map { "keys fetched from \($0.url) (every \($0.refreshS) s; on an unknown kid at most every \($0.minRefetchS) s)" }
                    ?? "\(jwt.keys.count) keys"
                var text = "auth jwt (\(jwt.algorithms.joined(separator: ", ")); \(keys)\(jwt.secret != nil ? " and a secret" : "")"
                if let issuer = jwt.issuer { text += "; iss \(issuer)" }
                if !jwt.audiences.isEmpty { text += "; aud \(jwt.audiences.joined(separator: ", "))" }
                if !jwt.forwardClaims.isEmpty { text += "; forwards " + jwt.forwardClaims.map { "\($0.claim) as \($0.header)" }.joined(separator: ", ") }
                parts.append(text + ")")
            }
            if auth.forwardCredentials { parts.append("credentials forwarded") }
        }
        if let limit = rateLimit, limit.rate > 0 {
            parts.append("rate_limit \(limit.rate) per \(limit.perMs) ms, burst \(limit.burst), per \(limit.key), scope \(limit.scope.rawValue)"
                + (limit.scope == .global ? ", lease \(limit.leaseSize)" : ""))
        }
        if let methods = allowedMethods, !methods.isEmpty { parts.append("methods \(methods.joined(separator: ", "))") }
        if let max = maxBodyBytes { parts.append(max == 0 ? "no body limit" : "bodies up to \(max) bytes") }
        if let cors, !cors.origins.isEmpty { parts.append("cors from \(cors.origins.joined(separator: ", "))\(cors.credentials ? " with credentials" : "")") }
        if requestHeaders.map({ !$0.isEmpty }) == true { parts.append("request header rules") }
        if responseHeaders.map({ !$0.isEmpty }) == true { parts.append("response header rules") }
        if securityHeaders == true { parts.append("security headers") }
        return parts
    }
}

extension ProxyConfig {
    /// One line per route with a policy (its own keys over the top-level ones), for `--check`.
    public var policySummary: [String] {
        var lines: [String] = []
        for route in routes {
            let parts = route.policy.merged(over: policy).summaryParts
            if !parts.isEmpty { lines.append("policy \(route.label): " + parts.joined(separator: "; ")) }
        }
        if !backends.isEmpty {
            let parts = policy.summaryParts
            if !parts.isEmpty { lines.append("policy (default pool): " + parts.joined(separator: "; ")) }
        }
        return lines
    }
}
