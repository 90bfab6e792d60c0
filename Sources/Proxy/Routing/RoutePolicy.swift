/// A route's `PolicyConfig` (its own keys over the top-level `policy`) compiled for the request
/// path: method names as bytes, the `Allow` line, the body limit in force.
///
/// Checked in the documented order before any backend is contacted: `allow`/`deny` (403), then
/// `allowed_methods` (405), then `max_body_bytes` against a declared `Content-Length` (413; a
/// chunked body is held to the same limit as it arrives, by the downstream).
/// Threading: immutable once built; one worker's loop.
struct RoutePolicy {
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
    /// Only header rules: nothing to refuse.
    let refusesNothing: Bool

    /// Why a request was refused: the `reason` label of `proxy_policy_refusals_total`.
    enum Refusal: Int, CaseIterable {
        case address, method, bodySize

        var label: String {
            switch self {
            case .address: "address"
            case .method: "method"
            case .bodySize: "body_size"
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
        allowField = (config.allowedMethods ?? []).joined(separator: ", ")
        maxBodyBytes = config.maxBodyBytes
        requestHeaders = CompiledHeaderRules(config.requestHeaders)
        responseHeaders = CompiledHeaderRules(config.responseHeaders)
        securityHeaders = config.securityHeaders ?? false
        refusesNothing = allow.isEmpty && deny.isEmpty && methods == nil && maxBodyBytes == nil
        isEmpty = refusesNothing && requestHeaders == nil && responseHeaders == nil && !securityHeaders
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
