import Foundation
import Glibc
import Testing

/// Request limits and connection caps, end to end.
@Suite(.timeLimit(.minutes(2)))
struct LimitsTests {

    @Test func refusesAnOversizedBodyBeforeReadingItAndTheClientSeesThe413() throws {
        let origin = fixedReplyOrigin("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(origin.port)"}],"health_check":{"interval_ms":60000},
             "limits":{"max_body_bytes":1000}}
            """)
        let c = try TestConnection(port: proxy.port)
        // The client keeps sending its body; the status must still reach it (no reset).
        try c.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + String(repeating: "a", count: 50000))
        let r = try c.readResponse()
        #expect(r.status == 413)
        #expect(r.header("Connection") == "close")
        #expect(origin.requests.isEmpty)
        // Within the limit: forwarded.
        #expect(try TestConnection(port: proxy.port).request("POST", "/ok", body: Array(repeating: 1, count: 1000)).status == 200)
    }

    @Test func cutsOffAChunkedBodyThatGrowsPastTheLimit() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"limits":{"max_body_bytes":1000}}
            """)
        let c = try TestConnection(port: proxy.port)
        try c.send("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + String(repeating: "a", count: 1024) + "\r\n")
        let r = try c.readResponse()
        #expect(r.status == 413)
    }

    @Test func answers405WithAllowForMethodsNotConfigured() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"limits":{"allowed_methods":["GET","HEAD"]}}
            """)
        let c = try TestConnection(port: proxy.port)
        let r = try c.request("DELETE", "/thing")
        #expect(r.status == 405)
        #expect(r.header("Allow") == "GET, HEAD")
        #expect(try c.request("GET", "/thing").status == 200, "a 405 without a body keeps the connection")
    }

    @Test func forwardsAbsoluteFormAsOriginFormAndRefusesClimbingDotSegments() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let r = try TestConnection(port: proxy.port).request("GET", "http://test.local/abs/path?q=1")
        #expect(r.json["path"] as? String == "/abs/path?q=1")
        let bad = try TestConnection(port: proxy.port).request("GET", "/static/../../etc/passwd")
        #expect(bad.status == 400)
        // Encoded dots are not decoded: forwarded byte-exact.
        let encoded = try TestConnection(port: proxy.port).request("GET", "/a/%2e%2e/b")
        #expect(encoded.json["path"] as? String == "/a/%2e%2e/b")
    }

    @Test func holdsConnectionsBeyondMaxConnectionsInTheQueueUntilOneCloses() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"limits":{"max_connections":2}}
            """)
        let a = try TestConnection(port: proxy.port), b = try TestConnection(port: proxy.port)
        #expect(try a.request("GET", "/a").status == 200)
        #expect(try b.request("GET", "/b").status == 200)
        // At the limit the proxy stops accepting: the third connection waits, neither answered
        // nor closed (as with HAProxy's maxconn; it used to be closed at once, unanswered).
        let third = try TestConnection(port: proxy.port, timeoutSeconds: 1)
        try third.send("GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(!third.fill(), "no answer while two connections are open")
        #expect(!third.closedByPeer, "and not closed")
        #expect(try b.request("GET", "/b2").status == 200, "the connections held are still served")
        // Once one closes, the waiting one is accepted and answered.
        third.setTimeout(seconds: 5)
        _ = consume a
        #expect(try third.readResponse().status == 200)
    }

    @Test func survivesRunningOutOfFileDescriptors() throws {
        let backend = try startBackend()
        // max_connections far above what the limit allows (the derived default would keep the
        // proxy from running out at all), so that clients take every descriptor.
        let config = writeTempFile(proxyConfig(backends: [backend.port], extra: ",\"limits\":{\"max_connections\":10000}"),
                                   suffix: ".json")
        // A hard limit of 40 descriptors: the proxy cannot raise it.
        let proxy = try ManagedProcess("/usr/bin/prlimit", ["--nofile=40:40", productsDirectory.appendingPathComponent("proxy").path,
                                                          "--config", config, "--listen", "127.0.0.1:0", "--workers", "2"], absolute: true)
        var held: [TestConnection] = []
        for _ in 0..<80 { if let c = try? TestConnection(port: proxy.port, timeoutSeconds: 2) { held.append(c) } }
        usleep(300_000)
        #expect(proxy.process.isRunning)
        let cpuBefore = proxy.cpuTicks
        usleep(500_000)
        #expect(proxy.cpuTicks - cpuBefore < 25, "no busy loop while out of descriptors")
        held.removeAll()
        #expect(eventually(5) { (try? get(proxy.port, "/after").status) == 200 })
    }
}
