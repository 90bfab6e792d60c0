/// The proxy's own endpoints.
enum AdminEndpoint: Equatable {
    case health, metrics, status, statusJSON
    /// The runtime API (`POST`/`PUT` under `admin.api_path`): `rest` is the target after it.
    case api(rest: String)
    /// The request inspector's page (`admin.inspect_path`), and its JSON and replay under
    /// `PATH/api/`: `rest` is the target after `PATH/api/` (`requests?after=3`, `replay/7`).
    case inspectPage
    case inspectAPI(rest: String, isPOST: Bool)
    /// Another method under `PATH/api/` (`OPTIONS`: a cross-origin preflight): refused by the
    /// proxy itself, never passed to a backend that might grant it.
    case inspectAPIOtherMethod
}

/// The configured admin paths as bytes, matched against request targets in place.
///
/// Threading: a value in `ServerSettings`, read on its worker's loop.
struct AdminPaths {
    private let health: [UInt8]?
    private let metrics: [UInt8]?
    private let status: [UInt8]?
    private let statusJSON: [UInt8]?
    private let api: [UInt8]?
    /// `admin.inspect_path` + `/api/`, and the page's path, while `inspect.enabled`.
    private let inspect: [UInt8]?
    private let inspectAPI: [UInt8]?
    /// The inspector's page path (written into its script).
    let inspectPath: String?
    /// `admin.listen` is set: metrics and status are served there, not on the main listener.
    let hasOwnListener: Bool
    /// What the status page polls.
    let statusJSONPath: String?
    /// The byte after the `/` when every path has the same one (`_` by default).
    private let sharedSecondByte: UInt8?

    init(_ config: AdminConfig, inspecting: Bool = false) {
        inspectPath = inspecting ? config.inspectPath : nil
        inspect = inspectPath.map { Array($0.utf8) }
        inspectAPI = inspectPath.map { Array(($0 + "/api/").utf8) }
        health = config.healthPath.map { Array($0.utf8) }
        metrics = config.metricsPath.map { Array($0.utf8) }
        status = config.statusPath.map { Array($0.utf8) }
        statusJSON = config.statusJSONPath.map { Array($0.utf8) }
        api = config.apiPath.map { Array($0.utf8) }
        hasOwnListener = config.listen != nil
        statusJSONPath = config.statusJSONPath
        let seconds = Set(config.namedPaths.map { Array($0.path.utf8)[1] })
        sharedSecondByte = seconds.count == 1 ? seconds.first : nil
    }

    /// The endpoint a `GET` or `HEAD` of exactly one of the paths (a query is allowed) asks for.
    func match(_ request: RequestHead) -> AdminEndpoint? {
        let b = request.bytes
        let t = request.target
        guard t.count >= 2 else { return nil }
        // Most requests are not for the proxy: one byte rules them out.
        if let second = sharedSecondByte, b[t.lowerBound + 1] != second { return nil }
        if let inspectAPI, t.count > inspectAPI.count, b.equals(t.lowerBound..<(t.lowerBound + inspectAPI.count), inspectAPI) {
            let rest = String(decoding: b[(t.lowerBound + inspectAPI.count)..<t.upperBound], as: UTF8.self)
            if b.equals(request.method, "GET") || b.equals(request.method, "HEAD") { return .inspectAPI(rest: rest, isPOST: false) }
            if b.equals(request.method, "POST") { return .inspectAPI(rest: rest, isPOST: true) }
            return .inspectAPIOtherMethod
        }
        guard b.equals(request.method, "GET") || b.equals(request.method, "HEAD") else {
            guard let api, b.equals(request.method, "POST") || b.equals(request.method, "PUT"), t.count > api.count,
                  b.equals(t.lowerBound..<(t.lowerBound + api.count), api), b[t.lowerBound + api.count] == UInt8(ascii: "/") else { return nil }
            return .api(rest: String(decoding: b[(t.lowerBound + api.count)..<t.upperBound], as: UTF8.self))
        }
        if Self.matches(b, t, health) { return .health }
        if Self.matches(b, t, metrics) { return .metrics }
        if Self.matches(b, t, status) { return .status }
        if Self.matches(b, t, statusJSON) { return .statusJSON }
        if Self.matches(b, t, inspect) { return .inspectPage }
        return nil
    }


    /// Whether a peer address (as text) is this machine: 127.0.0.0/8, ::1, or IPv4 loopback
    /// mapped into IPv6.
    static func isLoopback(_ ip: String) -> Bool {
        ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    private static func matches(_ b: [UInt8], _ t: Range<Int>, _ path: [UInt8]?) -> Bool {
        guard let path, t.count >= path.count else { return false }
        let prefix = t.lowerBound..<(t.lowerBound + path.count)
        guard b.equals(prefix, path) else { return false }
        return t.count == path.count || b[prefix.upperBound] == UInt8(ascii: "?")
    }
}
