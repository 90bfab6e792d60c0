/// Records one exchange for the request inspector while it runs: the exchange calls it at each
/// step (request body bytes, the response head, response body bytes, a local answer, the end)
/// and it keeps copies — bodies only up to `max_body_bytes`, copied as they pass, never held
/// back from the stream they watch. At the end it builds the immutable `InspectedExchange` and
/// hands it to the store.
///
/// Ownership: the exchange (`ExchangeState.inspection`), from the request head to the exchange's
/// end. Threading: its worker's loop only.
final class InspectionRecorder {
    /// The number it is listed under: taken when it is listed (or finished unlisted), so the
    /// proxy's own endpoints, which are never listed, leave no gaps. 0 until then.
    var seq: UInt64
    let startedMs: Int64
    let startNs: UInt64
    let method: String
    let target: String
    let host: String
    let scheme: String
    let requestFields: [(name: String, value: String)]
    let replayOf: UInt64?
    let maxBodyBytes: Int

    var route = ""
    var upstream = ""
    var requestBody = InspectedExchange.Body()
    var responseBody = InspectedExchange.Body()
    var responseFields: [(name: String, value: String)]?
    var status: UInt16 = 0
    var tunnel = false
    /// `InspectedExchange.compressedAs`.
    var compressedAs: String?
    /// `InspectedExchange.localAuthority`.
    var localAuthority = ""
    /// The response came from a backend (not the proxy's own answer).
    var fromBackend = false
    /// The whole request body arrived (`endRequestBody`): a replay can send it.
    var requestBodyComplete = false
    var error: String?
    var attempts: [InspectedExchange.Attempt] = []
    /// Monotonic nanoseconds of the steps (0: not reached).
    var routedNs: UInt64 = 0
    var connectedNs: UInt64 = 0

    init(seq: UInt64, request: RequestHead, target: Range<Int>, scheme: String, startNs: UInt64, replayOf: UInt64?, maxBodyBytes: Int) {
        self.seq = seq
        self.startNs = startNs
        startedMs = Platform.wallClockMs()
        let b = request.bytes
        method = b.string(request.method)
        self.target = b.string(target)
        host = request.hostField.map { b.string(request.fields[$0].value) } ?? ""
        self.scheme = scheme
        requestFields = request.fields.map { (b.string($0.name), b.string($0.value)) }
        self.replayOf = replayOf
        self.maxBodyBytes = maxBodyBytes
        protocolName = request.isHTTP2 ? "HTTP/2" : "HTTP/1.\(request.versionMinor)"
        switch request.framing {
        case .none: requestBodyComplete = true
        case .contentLength(let n): requestBody.bytes.reserveCapacity(Int(min(n, UInt64(maxBodyBytes))))
        default: break
        }
    }

    let protocolName: String

    var inFlight: InFlightExchange {
        InFlightExchange(seq: seq, startedMs: startedMs, method: method, target: target, host: host, protocolName: protocolName,
                         replayOf: replayOf, route: route)
    }

    func requestBodyBytes(_ data: UnsafeRawBufferPointer) { Self.keep(data, in: &requestBody, max: maxBodyBytes) }
    func responseBodyBytes(_ data: UnsafeRawBufferPointer) { Self.keep(data, in: &responseBody, max: maxBodyBytes) }

    private static func keep(_ data: UnsafeRawBufferPointer, in body: inout InspectedExchange.Body, max: Int) {
        body.size &+= UInt64(data.count)
        let room = max - body.bytes.count
        if room > 0 { body.bytes.append(contentsOf: data.prefix(room)) }
    }

    /// The backend's final response head.
    func response(_ head: ResponseHead) {
        let b = head.bytes
        status = head.status
        fromBackend = true
        responseFields = head.fields.map { (b.string($0.name), b.string($0.value)) }
        responseBody = InspectedExchange.Body()
    }

    /// The proxy answered itself (an error, a refusal).
    func localReply(_ reply: LocalReply) {
        status = reply.status
        fromBackend = false
        var fields: [(name: String, value: String)] = [("Content-Type", reply.contentType.description)]
        for f in reply.fields { fields.append((f.name.description, f.value)) }
        responseFields = fields
        responseBody = InspectedExchange.Body()
        responseBodyBytesOf(reply.body)
    }

    private func responseBodyBytesOf(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { responseBodyBytes($0) }
    }

    func finish(backend: String, upstreamStartNs: UInt64, upstreamHeadNs: UInt64, endNs: UInt64) -> InspectedExchange {
        func ms(_ from: UInt64, _ to: UInt64) -> Double? {
            guard from != 0, to >= from else { return nil }
            return Double(to - from) / 1e6
        }
        return InspectedExchange(
            seq: seq, startedMs: startedMs, method: method, target: target, host: host, protocolName: protocolName,
            requestFields: requestFields, requestBody: requestBody, requestBodyComplete: requestBodyComplete, replayOf: replayOf, route: route, upstream: upstream,
            backend: backend, status: status, responseFields: responseFields, responseBody: responseBody, tunnel: tunnel,
            error: error, attempts: attempts,
            queueMs: upstreamStartNs != 0 ? ms(routedNs, upstreamStartNs) : nil,
            connectMs: connectedNs != 0 ? ms(upstreamStartNs, connectedNs) : nil,
            firstByteMs: upstreamHeadNs != 0 ? ms(startNs, upstreamHeadNs) : nil,
            totalMs: ms(startNs, endNs) ?? 0, scheme: scheme, compressedAs: compressedAs,
            localAuthority: localAuthority)
    }
}
