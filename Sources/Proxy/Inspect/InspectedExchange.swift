/// One exchange as the request inspector shows it: the request and the response as they
/// passed (heads in full, bodies up to `inspect.max_body_bytes`), where it went and how long
/// each step took. Immutable once built, so any worker's admin request may read it.
///
/// Secrets are kept as received (a replay sends them); `InspectorAPI` masks them when it
/// renders, unless `reveal_secrets`.
/// Ownership: the `InspectorStore` ring of the worker that recorded it. Threading: any (immutable).
final class InspectedExchange: Sendable {
    /// A body as far as it was kept.
    struct Body: Sendable {
        /// The first bytes, up to the limit.
        var bytes: [UInt8] = []
        /// The whole body's size as it passed.
        var size: UInt64 = 0
        var truncated: Bool { UInt64(bytes.count) < size }
    }

    struct Attempt: Sendable {
        var backend: String
        var outcome: String
    }

    let seq: UInt64
    let startedMs: Int64
    let method: String
    let target: String
    let host: String
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    let protocolName: String
    let requestFields: [(name: String, value: String)]
    let requestBody: Body
    /// The whole request body arrived (a request answered before its body was read has not).
    let requestBodyComplete: Bool
    let replayOf: UInt64?
    let route: String
    let upstream: String
    let backend: String
    /// 0: no response (the client went before one).
    let status: UInt16
    let responseFields: [(name: String, value: String)]?
    let responseBody: Body
    let tunnel: Bool
    /// The proxy's own reason when it answered the request itself.
    let error: String?
    let attempts: [Attempt]
    /// Milliseconds; nil where the step did not happen.
    let queueMs: Double?
    let connectMs: Double?
    let firstByteMs: Double?
    let totalMs: Double
    /// The URL scheme the client used (for copy-as-curl).
    let scheme: String
    /// The content coding the proxy compressed the response with for the client (`compress`;
    /// the recorded head and body are the backend's), nil when it went as it came.
    let compressedAs: String?
    /// The address the client reached (`host:port`; "" when unknown): where copy as curl sends
    /// an absolute-form request, whose Host may name another server.
    let localAuthority: String

    init(seq: UInt64, startedMs: Int64, method: String, target: String, host: String, protocolName: String,
         requestFields: [(name: String, value: String)], requestBody: Body, requestBodyComplete: Bool = true, replayOf: UInt64?, route: String, upstream: String,
         backend: String, status: UInt16, responseFields: [(name: String, value: String)]?, responseBody: Body, tunnel: Bool,
         error: String?, attempts: [Attempt], queueMs: Double?, connectMs: Double?, firstByteMs: Double?, totalMs: Double, scheme: String,
         compressedAs: String? = nil, localAuthority: String = "") {
        self.seq = seq
        self.startedMs = startedMs
        self.method = method
        self.target = target
        self.host = host
        self.protocolName = protocolName
        self.requestFields = requestFields
        self.requestBody = requestBody
        self.requestBodyComplete = requestBodyComplete
        self.replayOf = replayOf
        self.route = route
        self.upstream = upstream
        self.backend = backend
        self.status = status
        self.responseFields = responseFields
        self.responseBody = responseBody
        self.tunnel = tunnel
        self.error = error
        self.attempts = attempts
        self.queueMs = queueMs
        self.connectMs = connectMs
        self.firstByteMs = firstByteMs
        self.totalMs = totalMs
        self.scheme = scheme
        self.compressedAs = compressedAs
        self.localAuthority = localAuthority
    }

    /// What it holds, roughly, for the store's memory bound.
    var footprint: Int {
        var n = 512 + method.utf8.count + target.utf8.count + host.utf8.count + requestBody.bytes.count + responseBody.bytes.count
        for f in requestFields { n += f.name.utf8.count + f.value.utf8.count + 32 }
        for f in responseFields ?? [] { n += f.name.utf8.count + f.value.utf8.count + 32 }
        return n
    }
}

/// What the list shows of an exchange still in flight: its request line, no more (the rest is
/// the recording worker's until it ends).
struct InFlightExchange: Sendable {
    let seq: UInt64
    let startedMs: Int64
    let method: String
    let target: String
    let host: String
    let protocolName: String
    let replayOf: UInt64?
    let route: String
}
