import Proxy

// The fuzz targets' checks on the production code: the input is fed, in every plan of
// `FuzzInput.plans`, into a real `HTTP1ServerConnection` and `ProxyExchange` on a `MemoryWorker`
// (clients and backends are `MemoryStream`s: no sockets, no timing). What the client receives must
// not depend on how the input was cut into reads.
//
// - A client's byte stream, answered by the proxy itself (the admin listener with its endpoints
//   turned off: each request gets a 404 or its 4xx verdict), and proxied to a backend that gives
//   every request it receives the same small answer once the client has sent everything.
// - A backend's byte stream, answering one GET (and separately one HEAD) from an HTTP/1.0 client
//   (the body de-framed and delimited by the close) and from an HTTP/1.1 client (the body
//   re-chunked, compared de-chunked).

/// One worker per role for the whole process (building one parses a configuration).
nonisolated(unsafe) private var adminWorker: MemoryWorker? = nil
nonisolated(unsafe) private var proxyWorker: MemoryWorker? = nil

private func worker(admin: Bool) -> MemoryWorker {
    if admin, let adminWorker { return adminWorker }
    if !admin, let proxyWorker { return proxyWorker }
    let config = admin
        ? #"{"backends":[{"id":"b","url":"http://127.0.0.1:9"}],"access_log":null,"admin":{"health_path":null,"metrics_path":null,"status_path":null,"status_json_path":null}}"#
        : #"{"backends":[{"id":"b","url":"http://127.0.0.1:9"}],"access_log":null,"admin":{"health_path":null,"metrics_path":null,"status_path":null,"status_json_path":null},"limits":{"max_body_bytes":100}}"#
    let made = try! MemoryWorker(config: config)
    if admin { adminWorker = made } else { proxyWorker = made }
    return made
}

/// The answer the fuzzing backend gives every request.
private let backendAnswer = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)

/// What the client received as text with the proxy's generated request ids taken out (they differ
/// per request by design), then how the stream ended.
private func transcript(_ stream: MemoryStream) -> String { transcript(stream.received, ending: stream) }

private func transcript(_ bytes: [UInt8], ending stream: MemoryStream) -> String {
    // "\r\n" is one Character to Swift: splitting on it splits at line ends.
    var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
    lines.removeAll { $0.hasPrefix("X-Request-Id: ") }
    return lines.joined(separator: "\r\n") + "\n[end of output sent: \(stream.sentEndOfOutput), closed: \(stream.isClosing)]"
}

/// The peer of `stream` sends `input` in `pieces` (the worker settling after each), then ends.
private func sendThenEnd(_ input: FuzzInput, pieces: [Int], from stream: MemoryStream, on worker: MemoryWorker) {
    var offset = 0
    for n in pieces {
        if n > 0 { stream.peerSends(Array(input.bytes[offset..<(offset + n)])) }
        offset += n
        worker.settle()
    }
    stream.peerEnds()
    worker.settle()
}

/// What a client that sent `input` in `pieces` and then half-closed receives. `proxied`: through
/// a backend (answered once everything is sent: each backend connection answers what reached it,
/// one request at a time), else by the proxy itself.
func connectionTranscript(_ input: FuzzInput, pieces: [Int], proxied: Bool) -> String {
    let worker = worker(admin: !proxied)
    let c = worker.connect(admin: !proxied)
    sendThenEnd(input, pieces: pieces, from: c, on: worker)
    if proxied {
        // Each request the proxy forwarded gets its answer; a bounded number of rounds (each
        // answer lets at most one more pipelined request through).
        var answered: [ObjectIdentifier: Int] = [:]
        for _ in 0..<64 {
            var progress = false
            for u in worker.upstreams where !u.isClosing {
                let seen = u.received.count
                if seen > answered[ObjectIdentifier(u), default: 0] {
                    answered[ObjectIdentifier(u)] = seen
                    u.peerSends(backendAnswer)
                    progress = true
                }
            }
            worker.settle()
            if !progress { break }
        }
    }
    let result = transcript(c) + " [backend connections: \(worker.upstreams.count)]"
    worker.closeAllConnections()
    return result
}

/// What a client asking `GET /` (or `HEAD /`) receives when the backend answers with `input`,
/// sent in `pieces`, and then closes. An HTTP/1.0 client gets the body close-delimited: its bytes
/// compare as they are. An HTTP/1.1 client gets a body without a length re-chunked, chunk sizes
/// following the cuts: its transcript has the body de-chunked (by the production decoder, which
/// must accept the proxy's own chunking).
func responseTranscript(_ input: FuzzInput, pieces: [Int], head: Bool, http11: Bool) -> String {
    let worker = worker(admin: false)
    let c = worker.connect()
    c.peerSends((head ? "HEAD" : "GET") + " / HTTP/1.\(http11 ? 1 : 0)\r\nHost: a\r\n\r\n")
    worker.settle()
    guard let backend = worker.upstreams.first else { input.fail("the request did not reach the backend") }
    sendThenEnd(input, pieces: pieces, from: backend, on: worker)
    let result = http11 ? transcript(dechunked(c.received, input: input), ending: c) : transcript(c)
    worker.closeAllConnections()
    return result
}

/// `bytes` with the body of its final response decoded when that response says
/// `Transfer-Encoding: chunked` (interim responses and the head kept as they are).
private func dechunked(_ bytes: [UInt8], input: FuzzInput) -> [UInt8] {
    // The final head is the first that is not interim: find the blank line that ends it.
    var headStart = 0
    var headEnd = 0
    var i = 0
    while i + 3 < bytes.count {
        if bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            headEnd = i + 4
            // An interim (1xx) head is followed by another head; any other head by its body,
            // whatever that body's bytes look like.
            let status = bytes[headStart...].prefix(12)
            let isInterim = status.prefix(10).elementsEqual("HTTP/1.1 1".utf8) && !status.elementsEqual("HTTP/1.1 101".utf8)
            if !isInterim { break }
            headStart = headEnd
            i = headEnd
            continue
        }
        i += 1
    }
    // Only the final head decides: the body may well contain the same words.
    let finalHead = String(decoding: bytes[headStart..<headEnd], as: UTF8.self)
    guard finalHead.contains("\r\nTransfer-Encoding: chunked\r\n") else { return bytes }
    var decoder = ChunkedDecoder()
    var body: [UInt8] = []
    let framed = Array(bytes[headEnd...])
    let consumed: Int
    do {
        consumed = try framed.withUnsafeBytes { raw in try decoder.decode(raw) { body.append(contentsOf: $0) } }
    } catch {
        input.fail("the proxy's chunked re-framing does not decode (\(error)): \"\(escape(framed))\"")
    }
    input.check(consumed == framed.count, "bytes after the proxy's last chunk: \"\(escape(framed))\"")
    return Array(bytes[..<headEnd]) + Array("[de-chunked, complete: \(decoder.isComplete)]".utf8) + body
}

/// The transcripts of `make` agree across every feed plan of `input`.
func checkTranscriptsAgree(_ input: FuzzInput, label: String, _ make: (_ pieces: [Int]) -> String) {
    let plans = input.plans
    let reference = make(plans[0].pieces)
    if verbose { print("  \(label): \(reference)") }
    for plan in plans.dropFirst() {
        let transcript = make(plan.pieces)
        input.check(transcript == reference || bothFailedTheBody(transcript, reference),
                    "\(label), fed \(plan.name):\n\(transcript)\n  fed whole:\n\(reference)")
    }
}

/// The one divergence the proxy allows by design: a response body found broken (a malformed
/// chunk, a body cut short) becomes a 502 when nothing of the response reached the client yet —
/// its head arrived in the same read — and a cut connection once the head went out. Which one
/// depends on the cuts; both say "failed", never a complete response.
private func bothFailedTheBody(_ a: String, _ b: String) -> Bool {
    func isBodyFailure502(_ t: Substring) -> Bool {
        t.hasPrefix("HTTP/1.1 502 ") && (t.contains("sent a malformed chunked body") || t.contains("before a complete response"))
    }
    // A cut after a response head went out (a cut before any head is never excused).
    func isCut(_ t: Substring) -> Bool {
        t.hasSuffix("[end of output sent: false, closed: true]") && t.hasPrefix("HTTP/1.1 ") && !t.hasPrefix("HTTP/1.1 502 ")
    }
    // Interim (1xx) heads went out before either outcome: they must agree, and the outcomes are
    // judged on what follows them.
    let (interimA, restA) = splitInterimHeads(a)
    let (interimB, restB) = splitInterimHeads(b)
    guard interimA == interimB else { return false }
    return (isBodyFailure502(restA) && isCut(restB)) || (isCut(restA) && isBodyFailure502(restB))
}

/// A transcript's leading interim heads (1xx other than 101, each through its blank line) and the rest.
private func splitInterimHeads(_ t: String) -> (interim: Substring, rest: Substring) {
    var rest = t[...]
    while rest.hasPrefix("HTTP/1.1 1") && !rest.hasPrefix("HTTP/1.1 101"),
          let end = rest.firstRange(of: "\r\n\r\n") {
        rest = rest[end.upperBound...]
    }
    return (t[..<rest.startIndex], rest)
}
