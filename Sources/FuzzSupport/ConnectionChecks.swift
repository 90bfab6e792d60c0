import Proxy

// The request fuzz target's check on the production code: the input is a client's byte stream
// into a real `HTTP1ServerConnection` (over a `MemoryStream`, on a worker whose every path is
// answered by the proxy: the admin listener with its endpoints turned off, so each request gets
// a 404 or its 4xx verdict). What the client receives must not depend on how the stream was cut
// into reads.

/// One worker for the whole process (building one parses a configuration).
nonisolated(unsafe) private var worker: MemoryWorker? = nil

private func sharedWorker() -> MemoryWorker {
    if let worker { return worker }
    let config = #"{"backends":[{"id":"b","url":"http://127.0.0.1:9"}],"access_log":null,"admin":{"health_path":null,"metrics_path":null,"status_path":null,"status_json_path":null}}"#
    let made = try! MemoryWorker(config: config)
    worker = made
    return made
}

/// What a client that sent `input` in `pieces` and then half-closed receives, with the proxy's
/// generated request ids taken out (they differ per request by design), and how it ended.
func connectionTranscript(_ input: FuzzInput, pieces: [Int]) -> String {
    let worker = sharedWorker()
    let c = worker.connect(admin: true)
    var offset = 0
    for n in pieces {
        if n > 0 { c.peerSends(Array(input.bytes[offset..<(offset + n)])) }
        offset += n
    }
    c.peerEnds()
    c.runPending()
    // "\r\n" is one Character to Swift: splitting on it splits at line ends.
    var lines = String(decoding: c.received, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
    lines.removeAll { $0.hasPrefix("X-Request-Id: ") }
    let ending = "\n[end of output sent: \(c.sentEndOfOutput), closed: \(c.isClosing)]"
    worker.closeAllConnections()
    return lines.joined(separator: "\r\n") + ending
}

/// The connection's answers agree across every feed plan of `input`.
func checkConnectionAgrees(_ input: FuzzInput) {
    let plans = input.plans
    let reference = connectionTranscript(input, pieces: plans[0].pieces)
    if verbose { print("  connection transcript: \(reference)") }
    for plan in plans.dropFirst() {
        let transcript = connectionTranscript(input, pieces: plan.pieces)
        input.check(transcript == reference,
                    "HTTP1ServerConnection over a MemoryStream, fed \(plan.name):\n\(transcript)\n  fed whole:\n\(reference)")
    }
}
