/// A route's `PolicyConfig` (its own keys over the top-level `policy`) compiled for the request
/// path: method names as bytes, the `Allow` line, the body limit in force.
///
/// Checked in the documented order before any backend is contacted: `allow`/`deny` (403), then
/// `allowed_methods` (405), then `max_body_bytes` against a declared `Content-Length` (413; a
/// chunked body is held to the same limit as it arrives, by the downstream).
/// A class: an exchange hands it around by reference (a struct of this many arrays cost a retain
/// per array at every pass).
/// Threading: immutable once built; one worker's loop.
final class RoutePolicy {
    let allow: [AddressRange]
    let deny: [AddressRange]
    /// nil: the top-level `limits.allowed_methods` applies (checked before routing).
    let methods: [[UInt8]]?
    /// The `Allow` field a 405 carries.
    let allowField: String
    /// nil: `limits.max_body_bytes` applies; 0: no limit.
    let maxBodyBytes: Int?
    /// Nothing to check (the common case: one branch per request).
    let isEmpty: Bool
    /// `request_headers`, `response_headers` (nil: none), `security_headers`.
    let requestHeaders: CompiledHeaderRules?
    let responseHeaders: CompiledHeaderRules?
    let securityHeaders: Bool
    /// `cors` (nil: none).
    let cors: CompiledCORS?
    /// `rate_limit` (nil: none); its state lives in the route's `RateLimiter` (per worker).
    let rateLimit: RateLimitConfig?
    /// `auth` (nil: none, or turned off).
    let auth: AuthConfig?
    /// Only header rules: nothing to refuse or answer.
    let refusesNothing: Bool
    /// `response_headers`, `security_headers` or `cors`: the response head is rewritten.
    let rewritesResponses: Bool

    /// Why a request was refused: the `reason` label of `proxy_policy_refusals_total`.
    enum Refusal: Int, CaseIterable {
        case address, method, bodySize, cors, rateLimit, auth

        var label: String {
            switch self {
            case .auth: "auth"
            case .rateLimit: "rate_limit"
            case .address: "address"
            case .method: "method"
            case .bodySize: "body_size"
            case .cors: "cors"
            }
        }
    }

    init(_ config: PolicyConfig) {
        allow = config.allow ?? []
        deny = config.deny ?? []
        // `[]`: any method (lifts a top-level list). GET brings HEAD with it, as in nginx's
        // `limit_except`: a HEAD is a GET without the body.
        let listed = config.allowedMethods.flatMap { $0.isEmpty ? nil : $0 }
        methods = listed.map { names in (names.contains("GET") && !names.contains("HEAD") ? names + ["HEAD"] : names).map { Array($0.utf8) } }
        let named = config.allowedMethods ?? []
        allowField = (named.contains("GET") && !named.contains("HEAD") ? named + ["HEAD"] : named).joined(separator: ", ")
        maxBodyBytes = config.maxBodyBytes
        auth = config.auth.flatMap { $0.isOff ? nil : $0 }
        // The credentials stop here unless the route says otherwise.
        var requestRules = config.requestHeaders ?? HeaderRulesConfig()
        if let auth, !auth.forwardCredentials { requestRules.remove.append("Authorization") }
        // Claims reach the backend only from a checked token, never from the client.
        requestRules.remove += auth?.jwt?.forwardClaims.map(\.header) ?? []
        requestHeaders = CompiledHeaderRules(requestRules)
        responseHeaders = CompiledHeaderRules(config.responseHeaders)
        securityHeaders = config.securityHeaders ?? false
        cors = CompiledCORS(config.cors)
        rateLimit = config.rateLimit.flatMap { $0.rate > 0 ? $0 : nil }
        refusesNothing = allow.isEmpty && deny.isEmpty && methods == nil && maxBodyBytes == nil && cors == nil && rateLimit == nil
            && auth == nil
        rewritesResponses = responseHeaders != nil || securityHeaders || cors != nil
        isEmpty = refusesNothing && requestHeaders == nil && !rewritesResponses
    }

    /// Whether `address` (the client's, 4 or 16 bytes) may use the route: not in a `deny`
    /// range, and in an `allow` range when there are some. An unknown address (empty) is
    /// refused by either list.
    func admits(_ address: ArraySlice<UInt8>) -> Bool {
        if address.isEmpty { return allow.isEmpty && deny.isEmpty }
        if deny.contains(where: { $0.contains(address) }) { return false }
        return allow.isEmpty || allow.contains { $0.contains(address) }
    }

    /// Whether the route takes `method` (a range of `bytes`).
    func accepts(method: Range<Int>, in bytes: [UInt8]) -> Bool {
        guard let methods else { return true }
        return methods.contains { bytes.equals(method, $0) }
    }
}

/// A route's `cors` compiled: what a preflight may ask for and the fields the answers carry.
/// Origins compare byte for byte (browsers send them serialised: lowercase, no path).
struct CompiledCORS {
    let origins: [[UInt8]]
    let anyOrigin: Bool
    let methods: [[UInt8]]
    let anyMethod: Bool
    /// Lowercase.
    let headers: [[UInt8]]
    let anyHeader: Bool
    let credentials: Bool
    let allowMethods: String
    let allowHeaders: String
    let exposeHeaders: [UInt8]
    let maxAge: String?

    init?(_ config: CORSConfig?) {
        guard let config, !config.origins.isEmpty else { return nil }
        anyOrigin = config.anyOrigin
        origins = config.origins.map { Array($0.utf8) }
        anyMethod = config.methods.contains("*")
        methods = config.methods.map { Array($0.utf8) }
        anyHeader = config.headers.contains("*")
        headers = config.headers.map { Array($0.lowercased().utf8) }
        credentials = config.credentials
        allowMethods = config.methods.joined(separator: ", ")
        allowHeaders = config.headers.joined(separator: ", ")
        exposeHeaders = Array(config.exposeHeaders.joined(separator: ", ").utf8)
        maxAge = config.maxAgeS.map(String.init)
    }

    func allowsOrigin(_ b: [UInt8], _ value: Range<Int>) -> Bool {
        anyOrigin || origins.contains { b.equals(value, $0) }
    }

    /// GET, HEAD and POST always pass a browser's method check (the Fetch standard's
    /// CORS-safelisted methods): a preflight asked for them (because of its headers) is not
    /// refused for the method.
    func allowsMethod(_ b: [UInt8], _ value: Range<Int>) -> Bool {
        anyMethod || b.equals(value, "GET") || b.equals(value, "HEAD") || b.equals(value, "POST") || methods.contains { b.equals(value, $0) }
    }

    /// Every name of an `Access-Control-Request-Headers` list is allowed (case-insensitively).
    func allowsHeaders(_ b: [UInt8], _ list: Range<Int>) -> Bool {
        if anyHeader { return true }
        var allowed = true
        forEachToken(b, list) { name in
            if allowed && !headers.contains(where: { equalsLowercase(b, name, $0) }) { allowed = false }
        }
        return allowed
    }
}
