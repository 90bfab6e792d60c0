import Foundation
import Glibc
import Testing

/// Regression tests for races and half-closes found in review. Some freeze the proxy with
/// SIGSTOP so that several events land in one loop iteration in a known order.
@Suite(.timeLimit(.minutes(2)))
struct FaultTests {

    @Test func survivesABackendResetWhileItsClientIsStillUploading() throws {
        let resetNow = Gate()
        let origin = ScriptedOrigin { conn, _ in
            resetNow.wait()
            conn.reset()
            return .close
        }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let c = try TestConnection(port: proxy.port)
        try c.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + String(repeating: "a", count: 100))
        #expect(eventually { origin.connections == 1 })
        usleep(100_000)
        // Client bytes and the backend's reset become ready in the same loop turn.
        proxy.signal(SIGSTOP)
        usleep(100_000)
        try c.send(String(repeating: "b", count: 100))
        usleep(50_000)
        resetNow.open()
        usleep(100_000)
        proxy.signal(SIGCONT)
        usleep(500_000)
        #expect(proxy.process.isRunning, "proxy died: \(proxy.log)")
        #expect(try get(proxy.port, "/_health").status == 200)
    }

    @Test func neverHandsAPooledConnectionWithUnreadBytesToTheNextClient() throws {
        let sendLateBody = Gate()
        let origin = ScriptedOrigin { conn, head in
            if head.hasPrefix("HEAD") {
                // A broken backend: the body of a HEAD response, a moment after its head.
                conn.send("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
                sendLateBody.wait()
                conn.send("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
            } else {
                conn.send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
            }
            return .keepReading
        }
        // One worker: both clients must share the pool.
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000), workers: 1)
        let victim = try TestConnection(port: proxy.port)
        let attacker = try TestConnection(port: proxy.port)
        #expect(try attacker.request("HEAD", "/x").status == 200)
        usleep(100_000)
        proxy.signal(SIGSTOP)
        usleep(100_000)
        try victim.send("GET /account HTTP/1.1\r\nHost: x\r\n\r\n")
        usleep(50_000)
        sendLateBody.open()
        usleep(100_000)
        proxy.signal(SIGCONT)
        let r = try victim.readResponse()
        #expect(r.text == "real")
    }

    @Test func retriesOnAFreshConnectionWhenEveryPooledOneIsDead() throws {
        let origin = oneShotKeepAliveOrigin()
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000), workers: 1)
        // Two pooled connections, each of which will die on its next request.
        let a = try TestConnection(port: proxy.port), b = try TestConnection(port: proxy.port)
        try a.send("GET /warm-a HTTP/1.1\r\nHost: x\r\n\r\n")
        try b.send("GET /warm-b HTTP/1.1\r\nHost: x\r\n\r\n")
        _ = try a.readResponse()
        _ = try b.readResponse()
        #expect(origin.connections == 2)
        let r = try a.request("GET", "/after")
        #expect(r.status == 200)
        #expect(r.text == "connection 3")
    }

    @Test func answersAHalfClosedClientWhoseBodyArrivedBeforeTheBackendConnection() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        try c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        c.shutdownWrite()
        let r = try c.readResponse()
        #expect(r.status == 200)
        #expect(r.json["body_bytes"] as? Int == 5)
        #expect(c.readToEnd().isEmpty)
        #expect(c.closedByPeer)
    }

    @Test func answersEveryPipelinedRequestBeforeAHalfClose() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port)
        try c.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        c.shutdownWrite()
        #expect(try c.readResponse().json["path"] as? String == "/a")
        #expect(try c.readResponse().json["path"] as? String == "/b")
        #expect(c.readToEnd().isEmpty)
    }

    @Test func deliversTheWholeResponseToAClientThatReadsLateBeforeClosing() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let total = 4_100_000
        for (query, version) in [("", "1.1\r\nConnection: close"), ("&chunked=1", "1.0")] {
            let c = try TestConnection(port: proxy.port)
            c.setReceiveBuffer(65536)
            try c.send("GET /stream?bytes=\(total)\(query) HTTP/\(version)\r\nHost: x\r\n\r\n")
            usleep(1_500_000)  // everything is queued somewhere before the client reads
            let raw = c.readToEnd()
            let head = (String(decoding: raw.prefix(300), as: UTF8.self).components(separatedBy: "\r\n\r\n").first ?? "").utf8.count + 4
            #expect(raw.count - head == total, "got \(raw.count - head) of \(total) with \(version)")
        }
    }

    @Test func closesTheClientWhenTheBackendFallsSilentMidBody() throws {
        let release = Gate()
        let origin = ScriptedOrigin { conn, _ in
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            release.wait()  // then silence, with 990 bytes still owed
            return .close
        }
        defer { release.open() }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000, responseIdleMs: 400))
        let c = try TestConnection(port: proxy.port)
        try c.send("GET /partial HTTP/1.1\r\nHost: x\r\n\r\n")
        let start = Date()
        let raw = c.readToEnd()
        let elapsed = Date().timeIntervalSince(start)
        // The head is already out, so no 504 is possible: the client sees the body cut short.
        #expect(String(decoding: raw, as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"))
        #expect(String(decoding: raw, as: UTF8.self).hasSuffix("0123456789"))
        #expect(elapsed >= 0.3 && elapsed < 3, "closed after \(elapsed) s")
        #expect(try get(proxy.port, "/_health").status == 200)
    }

    /// A backend that stops reading an upload makes the proxy stop reading the client: that pause
    /// is the proxy's doing, not the client stalling, so `client_body_ms` does not run out.
    @Test func anUploadHeldBackByASlowBackendIsNot408() throws {
        let size = 16 << 20
        let origin = ScriptedOrigin { conn, _ in
            Thread.sleep(forTimeInterval: 2)  // not reading: the proxy's queue to it fills up
            var got = conn.readAfterHead.count  // what came in with the head (when the load made them one read)
            var buf = [UInt8](repeating: 0, count: 65536)
            let until = Date().addingTimeInterval(20)
            while got < size && Date() < until {
                let n = buf.withUnsafeMutableBytes { recv(conn.fd, $0.baseAddress, $0.count, 0) }
                if n > 0 { got += n } else if n == 0 || (errno != EAGAIN && errno != EINTR) { break }
            }
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(String(got).utf8.count)\r\n\r\n\(got)")
            return .close
        }
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(origin.port)"}],"health_check":{"interval_ms":60000},"timeouts":{"client_body_ms":500}}
            """)
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 30)
        try c.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: \(size)\r\n\r\n")
        try c.send([UInt8](repeating: 0x61, count: size))
        let r = try c.readResponse()
        #expect(r.status == 200, "got \(r.status): \(String(decoding: r.body, as: UTF8.self))")
        #expect(String(decoding: r.body, as: UTF8.self) == String(size))
    }

    @Test func answers408WhenARequestBodyStalls() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"timeouts":{"client_body_ms":300}}
            """)
        let c = try TestConnection(port: proxy.port)
        try c.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
        let start = Date()
        let r = try c.readResponse()
        #expect(r.status == 408)
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(try backendStatesActive(proxy.port) == 0, "the backend connection is released")
    }
}

/// A one-shot gate a test opens to let a scripted origin go on.
final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    private var isOpen = false
    func open() { condition.lock(); isOpen = true; condition.broadcast(); condition.unlock() }
    func wait() { condition.lock(); while !isOpen { condition.wait() }; condition.unlock() }
}

/// Sum of `active_connections` over the proxy's backends.
func backendStatesActive(_ port: UInt16) throws -> Int {
    let list = try get(port, "/_health").json["backends"] as? [[String: Any]] ?? []
    return list.reduce(0) { $0 + ($1["active_connections"] as? Int ?? 0) }
}
