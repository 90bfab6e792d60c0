import Foundation
import Glibc
import Testing

/// End-to-end tests: the real `proxy` and `test-backend` binaries on 127.0.0.1, started and
/// stopped by each test.
@Suite(.timeLimit(.minutes(2)))
struct ProxyIntegrationTests {

    // MARK: Basic forwarding

    @Test func forwardsGetAndPostWithForwardingHeadersAndWithoutHopByHopHeaders() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        let r = try c.request("GET", "/hello?x=1", headers: [
            "Connection": "keep-alive, X-Secret", "X-Secret": "drop-me", "Keep-Alive": "timeout=5",
            "TE": "gzip", "Proxy-Connection": "keep-alive", "X-Forwarded-For": "10.0.0.1", "X-Real-IP": "6.6.6.6",
        ])
        #expect(r.status == 200)
        let echo = r.json
        #expect(echo["method"] as? String == "GET")
        #expect(echo["path"] as? String == "/hello?x=1")
        let headers = echo["headers"] as? [String: String] ?? [:]
        #expect(headers["host"] == "test.local")
        #expect(headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1")
        #expect(headers["x-real-ip"] == "127.0.0.1")
        #expect(headers["x-forwarded-proto"] == "http")
        #expect(headers["x-forwarded-host"] == "test.local")
        for hop in ["connection", "x-secret", "keep-alive", "te", "proxy-connection", "transfer-encoding", "upgrade"] {
            #expect(headers[hop] == nil, "hop-by-hop header \(hop) reached the backend")
        }

        let body = Array("name=value&x=y".utf8)
        let p = try c.request("POST", "/submit", headers: ["Content-Type": "application/x-www-form-urlencoded"], body: body)
        #expect(p.status == 200)
        #expect(p.json["method"] as? String == "POST")
        #expect(p.json["body_bytes"] as? Int == body.count)
        #expect(p.json["content_length"] as? String == String(body.count))
    }

    @Test func answersHealthWithBackendStates() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let r = try get(proxy.port, "/_health")
        #expect(r.status == 200)
        #expect(r.header("Content-Type") == "application/json")
        #expect(r.json["status"] as? String == "healthy")
        let backends = r.json["backends"] as? [[String: Any]] ?? []
        #expect(backends.count == 1)
        #expect(backends.first?["id"] as? String == "b1")
        #expect(backends.first?["url"] as? String == "http://127.0.0.1:\(backend.port)")
        #expect(backends.first?["healthy"] as? Bool == true)
        #expect(backends.first?["active_connections"] as? Int == 0)
    }

    @Test func spreadsTenRequestsEvenlyOverTwoBackends() throws {
        let b1 = try startBackend(), b2 = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [b1.port, b2.port]))
        let c = try TestConnection(port: proxy.port)
        var counts: [String: Int] = [:]
        for i in 0..<10 {
            let r = try c.request("GET", "/n/\(i)")
            counts[r.json["backend"] as? String ?? "?", default: 0] += 1
        }
        #expect(counts["backend-\(b1.port)"] == 5)
        #expect(counts["backend-\(b2.port)"] == 5)
    }

    // MARK: Streaming and memory

    @Test func uploadsTenMegabytesIntactAndDownloadsHundredMegabytesIntactInBoundedMemory() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 30)

        var upload = [UInt8](repeating: 0, count: 10 * 1024 * 1024)
        var x: UInt32 = 12345
        for i in upload.indices { x = x &* 1_103_515_245 &+ 12345; upload[i] = UInt8(truncatingIfNeeded: x >> 16) }
        let up = try c.request("POST", "/upload", body: upload)
        #expect(up.json["body_bytes"] as? Int == upload.count)
        #expect(up.json["body_fnv1a"] as? String == fnv1a(upload))

        let total = 100 * 1024 * 1024
        try c.send("GET /stream?bytes=\(total) HTTP/1.1\r\nHost: x\r\n\r\n")
        var check = StreamPatternCheck()
        let r = try c.readResponse(discardBody: true) { check.consume($0) }
        #expect(r.status == 200)
        #expect(check.bytes == total)
        #expect(check.wrongPieces == 0)
        let peak = proxy.peakRSSKiB
        #expect(peak > 0 && peak < 64 * 1024, "proxy peak RSS \(peak) KiB")
        print("proxy peak RSS after 10 MB up + 100 MB down: \(peak) KiB")
    }

    @Test func relaysChunkedBodiesBothWays() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        let chunks = ["hello ", "chunked ", String(repeating: "z", count: 70000)]
        var req = "POST /chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for ch in chunks { req += String(ch.utf8.count, radix: 16) + ";ext=1\r\n" + ch + "\r\n" }
        req += "0\r\nX-Trailer: t\r\n\r\n"
        try c.send(req)
        let r = try c.readResponse()
        let joined = Array(chunks.joined().utf8)
        #expect(r.status == 200)
        #expect(r.json["body_bytes"] as? Int == joined.count)
        #expect(r.json["body_fnv1a"] as? String == fnv1a(joined))
        let h = r.json["headers"] as? [String: String] ?? [:]
        #expect(h["transfer-encoding"] == "chunked", "request must reach the backend re-framed as chunked")

        try c.send("GET /stream?bytes=300000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        let d = try c.readResponse()
        #expect(d.header("Transfer-Encoding") == "chunked")
        #expect(d.body.count == 300000)
        #expect(d.body.enumerated().allSatisfy { $0.element == UInt8($0.offset % 251) })
    }

    @Test func http10ClientGetsCloseDelimitedResponseNeverChunked() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        try c.send("GET /stream?bytes=5000&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
        let raw = c.readToEnd()
        let text = String(decoding: raw, as: UTF8.self)
        #expect(!text.lowercased().contains("transfer-encoding"))
        let head = text.components(separatedBy: "\r\n\r\n").first ?? ""
        #expect(head.hasPrefix("HTTP/1.1 200"))
        #expect(raw.count - head.utf8.count - 4 == 5000)
    }

    @Test func keepsConnectionsAliveAndAnswersPipelinedRequestsInOrder() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        var batch = ""
        for i in 0..<5 { batch += "GET /pipe/\(i) HTTP/1.1\r\nHost: x\r\n\r\n" }
        batch += "POST /pipe/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        batch += "GET /_health HTTP/1.1\r\nHost: x\r\n\r\n"
        batch += "GET /delay?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n"
        try c.send(batch)
        for i in 0..<6 {
            let r = try c.readResponse()
            #expect(r.json["path"] as? String == "/pipe/\(i)")
        }
        #expect(try c.readResponse().json["status"] as? String == "healthy")
        #expect(try c.readResponse().json["path"] as? String == "/delay?ms=50")
        // Same connection still usable afterwards: keep-alive.
        #expect(try c.request("GET", "/after").json["path"] as? String == "/after")
    }

    @Test func relaysExpectContinue() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        try c.send("POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        c.setTimeout(seconds: 5)
        #expect(c.fill())  // the interim response arrives before any body byte is sent
        try c.send("body")
        let r = try c.readResponse()
        #expect(r.status == 200)
        #expect(r.json["body_bytes"] as? Int == 4)
    }

    @Test func slowReadingClientDoesNotMakeMemoryGrow() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 30)
        c.setReceiveBuffer(16 * 1024)
        try c.send("GET /stream?bytes=\(1024 * 1024 * 1024) HTTP/1.1\r\nHost: x\r\n\r\n")
        // Read a little, then stall: the proxy must stop reading the backend, not buffer 1 GiB.
        for _ in 0..<4 { c.fill(max: 16 * 1024) }
        usleep(1_500_000)
        let stalled = proxy.rssKiB
        for _ in 0..<50 { c.fill(max: 16 * 1024) }
        usleep(1_000_000)
        let later = proxy.rssKiB
        #expect(stalled > 0 && stalled < 32 * 1024 * sanitizerMemoryFactor, "RSS while stalled \(stalled) KiB")
        #expect(later < stalled + 4 * 1024, "RSS grew from \(stalled) to \(later) KiB")
    }

    @Test func streamsTheFirstEventBeforeTheBackendFinishes() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        let start = Date()
        try c.send("GET /sse?events=3&interval_ms=700 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        var firstEventAt: TimeInterval?
        var received = ""
        while firstEventAt == nil, c.fill() {
            // Peek at everything read so far without consuming it.
            received = String(decoding: c.buffered, as: UTF8.self)
            if received.contains("data: event 1") { firstEventAt = Date().timeIntervalSince(start) }
        }
        let r = try c.readResponse()
        let total = Date().timeIntervalSince(start)
        #expect(r.status == 200)
        #expect(r.text.contains("data: event 3"))
        #expect(firstEventAt != nil)
        // Events come at 0, 0.7 and 1.4 s: the first must arrive long before the last.
        #expect((firstEventAt ?? 99) < 0.5, "first event after \(firstEventAt ?? -1) s")
        #expect(total > 1.2)
    }

    // MARK: Failures

    @Test func failsOverWhenABackendDiesAndBringsItBackWhenItReturns() throws {
        let b1 = try startBackend(), b2 = try startBackend()
        let port1 = b1.port
        let proxy = try startProxy(config: proxyConfig(backends: [b1.port, b2.port]))
        b1.stop()
        // Requests keep succeeding (connect failure goes to the next backend) …
        for i in 0..<6 {
            let r = try get(proxy.port, "/f/\(i)")
            #expect(r.status == 200)
            #expect(r.json["backend"] as? String == "backend-\(b2.port)")
        }
        // … and the health checker marks the dead one down.
        #expect(eventually { backendStates(proxy.port)["b1"] == false })
        let restarted = try startBackend(port: port1)
        #expect(eventually { backendStates(proxy.port)["b1"] == true })
        var seen = Set<String>()
        for i in 0..<4 { seen.insert(try get(proxy.port, "/back/\(i)").json["backend"] as? String ?? "") }
        #expect(seen.contains("backend-\(restarted.port)"))
    }

    @Test func answers503AtOnceWhenNoBackendIsHealthy() throws {
        let b1 = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [b1.port]))
        b1.stop()
        #expect(eventually { (try? get(proxy.port, "/_health").status) == 503 })
        let start = Date()
        let r = try get(proxy.port, "/anything")
        #expect(r.status == 503)
        #expect(r.text.contains("no healthy backend"))
        #expect(Date().timeIntervalSince(start) < 0.5)
    }

    @Test func answers502WhenTheBackendRefusesOrSendsGarbage() throws {
        // Up at the first probe, then gone: until the next probe (a minute away) it counts as up,
        // so the request meets a refused connection.
        let backend = try startBackend()
        let refused = try startProxy(config: proxyConfig(backends: [backend.port], intervalMs: 60000))
        // Wait for the first probe's verdict, so the kill below cannot race it.
        #expect(eventually { probeSuccesses(refused.port)["b1"] ?? 0 >= 1 })
        backend.stop()
        let r1 = try get(refused.port, "/x")
        #expect(r1.status == 502)
        #expect(r1.text.contains("ECONNREFUSED"))

        let garbage = fixedReplyOrigin("NOT HTTP AT ALL\r\n\r\n")
        let bad = try startProxy(config: proxyConfig(backends: [garbage.port], intervalMs: 60000))
        let r2 = try get(bad.port, "/x")
        #expect(r2.status == 502)
        #expect(r2.text.contains("malformed"))
    }

    @Test func answers504WhenTheBackendStaysSilent() throws {
        let silent = fixedReplyOrigin(nil)
        let proxy = try startProxy(config: proxyConfig(backends: [silent.port], intervalMs: 60000, upstreamMs: 400))
        let start = Date()
        let r = try get(proxy.port, "/slow")
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.status == 504)
        #expect(elapsed >= 0.35 && elapsed < 2.0, "504 after \(elapsed) s")
        silent.stop()
    }

    @Test func retriesAnIdempotentRequestOnceWhenAPooledConnectionDiesButNeverAPost() throws {
        let origin = oneShotKeepAliveOrigin()
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let c = try TestConnection(port: proxy.port)
        #expect(try c.request("GET", "/one").text == "connection 1")
        // The pooled connection is closed by the origin when this request arrives: retried fresh.
        #expect(try c.request("GET", "/two").text == "connection 2")
        // The first /two met the dying connection; the retry carried it.
        #expect(origin.requests == ["GET /one HTTP/1.1", "GET /two HTTP/1.1", "GET /two HTTP/1.1"])
        // A POST is never replayed automatically: the client sees the failure.
        let post = try c.request("POST", "/three", body: Array("x".utf8))
        #expect(post.status == 502)
        #expect(origin.requests.filter { $0.hasPrefix("POST") }.count == 1)
    }

    @Test func clientAbortsAreNotHeldAgainstTheBackend() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port], intervalMs: 60000))
        #expect(eventually { backendStates(proxy.port)["b1"] == true })
        for _ in 0..<5 {
            let c = try TestConnection(port: proxy.port)
            try c.send("GET /stream?bytes=100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            c.fill()
            // Closed mid-download by the test.
        }
        for _ in 0..<3 {
            let c = try TestConnection(port: proxy.port)
            try c.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\npartial")
        }
        usleep(200_000)
        #expect(backendStates(proxy.port)["b1"] == true)
        #expect(try get(proxy.port, "/still-fine").status == 200)
    }

    @Test func answers408ToASlowRequestHeadAndClosesIdleKeepAliveConnections() throws {
        let backend = try startBackend()
        let config = """
        {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],
         "timeouts":{"client_header_ms":300,"idle_ms":300}}
        """
        let proxy = try startProxy(config: config)
        let slow = try TestConnection(port: proxy.port)
        try slow.send("GET / HTTP/1.1\r\nHost: x\r\n")  // never finished
        let start = Date()
        let r = try slow.readResponse()
        #expect(r.status == 408)
        #expect(Date().timeIntervalSince(start) < 2)

        let idle = try TestConnection(port: proxy.port)
        #expect(try idle.request("GET", "/once").status == 200)
        usleep(700_000)
        #expect(!idle.fill(), "an idle keep-alive connection is closed after idle_ms")
        #expect(idle.closedByPeer)
    }

    @Test func relaysHeadAndBodilessResponsesWithoutWaitingForABody() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        let head = try c.request("HEAD", "/stream?bytes=5000")
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == "5000")
        let noContent = try c.request("GET", "/status?code=204")
        #expect(noContent.status == 204)
        #expect(try c.request("GET", "/after").status == 200)
    }

    @Test func rejectsSmugglingShapedRequestsBeforeTheBackendSeesThem() throws {
        let origin = fixedReplyOrigin("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let c = try TestConnection(port: proxy.port)
        try c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        let r = try c.readResponse()
        #expect(r.status == 400)
        #expect(r.header("Connection") == "close")
        #expect(origin.requests.isEmpty)
    }
}

/// `id → consecutive_successes` from the proxy's `/_health`.
func probeSuccesses(_ port: UInt16) -> [String: Int] {
    guard let r = try? get(port, "/_health"), let list = r.json["backends"] as? [[String: Any]] else { return [:] }
    var out: [String: Int] = [:]
    for b in list { if let id = b["id"] as? String { out[id] = b["consecutive_successes"] as? Int } }
    return out
}

/// `id → healthy` from the proxy's `/_health`.
func backendStates(_ port: UInt16) -> [String: Bool] {
    guard let r = try? get(port, "/_health"), let list = r.json["backends"] as? [[String: Any]] else { return [:] }
    var out: [String: Bool] = [:]
    for b in list { if let id = b["id"] as? String { out[id] = b["healthy"] as? Bool } }
    return out
}

func fnv1a(_ bytes: [UInt8]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h ^= UInt64(b); h = h &* 0x100_0000_01b3 }
    let s = String(h, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
