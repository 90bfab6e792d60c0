import Foundation
import Glibc
import Testing

/// Worker loops, graceful shutdown and hot reload, end to end with the real binaries.
///
/// Serialized: several tests time what the proxy does after a signal and need the two cores.
@Suite(.serialized) struct LifecycleTests {
    // MARK: Worker loops

    @Test func connectionsAreSpreadOverTheWorkersAndHealthIsOneView() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]), workers: 2)
        // A request held in flight on one worker...
        let held = try TestConnection(port: proxy.port)
        let heldWorker = try #require(try held.request("GET", "/_health").json["worker"] as? Int)
        try held.send("GET /delay?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        usleep(200_000)
        // ...is counted by /_health on every worker; fresh connections reach both workers.
        var seen = Set<Int>()
        for _ in 0..<64 where seen.count < 2 {
            let c = try TestConnection(port: proxy.port)
            let health = try c.request("GET", "/_health").json
            #expect(health["workers"] as? Int == 2)
            guard let worker = health["worker"] as? Int else { continue }
            seen.insert(worker)
            if worker != heldWorker {
                // The previous /via exchange may not be counted out yet: its client can read the
                // response before the worker's callback that wrote it returns. Bounded re-asks.
                var backends = health["backends"] as? [[String: Any]] ?? []
                for _ in 0..<20 where backends.first?["active_connections"] as? Int != 1 {
                    usleep(10_000)
                    backends = try c.request("GET", "/_health").json["backends"] as? [[String: Any]] ?? []
                }
                #expect(backends.first?["active_connections"] as? Int == 1, "summed across workers: \(backends)")
            }
            #expect(try c.request("GET", "/via/\(worker)").status == 200, "the same worker proxies")
        }
        #expect(seen == [0, 1], "workers seen: \(seen)")
        #expect(try held.readResponse().status == 200)
    }

    @Test func everyWorkerStopsUsingAHungBackendWithinOneProbe() throws {
        let b1 = try startBackend(), b2 = try startBackend()
        // Probes every 300 ms, 500 ms probe timeout, down after one failure.
        let proxy = try startProxy(config: proxyConfig(backends: [b1.port, b2.port], intervalMs: 300, upstreamMs: 10000),
                                   workers: 2)
        #expect(eventually { backendStates(proxy.port) == ["b1": true, "b2": true] })
        b1.signal(SIGSTOP)  // accepts connections (the kernel does) but never answers
        defer { b1.signal(SIGCONT) }
        let stopped = Date()
        #expect(eventually(3) { backendStates(proxy.port)["b1"] == false })
        let detection = Date().timeIntervalSince(stopped)
        #expect(detection < 2, "one interval (300 ms) plus the probe timeout (500 ms), with slack: \(detection) s")
        // Every worker routes around it now: no request waits on the hung backend.
        var workers = Set<Int>()
        for i in 0..<24 {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 3)
            if let w = try c.request("GET", "/_health").json["worker"] as? Int { workers.insert(w) }
            let start = Date()
            let r = try c.request("GET", "/after/\(i)")
            #expect(r.status == 200 && r.json["backend"] as? String == "backend-\(b2.port)")
            #expect(Date().timeIntervalSince(start) < 1)
        }
        #expect(workers.count == 2, "both workers were asked: \(workers)")
    }

    // MARK: Graceful shutdown

    @Test func sigtermFinishesWhatIsInFlightClosesIdleConnectionsAndExitsZero() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]), workers: 2)
        let idle = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        #expect(try idle.request("GET", "/warm").status == 200)
        let slow = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        try slow.send("GET /delay?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n")
        // More than the socket buffers on the way can hold, so the proxy must wait for the reader.
        let size = 32 * 1024 * 1024
        let download = try TestConnection(port: proxy.port, timeoutSeconds: 10)
        download.setReceiveBuffer(128 * 1024)
        try download.send("GET /stream?bytes=\(size) HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(download.fill(), "the download has started")
        usleep(100_000)

        proxy.signal(SIGTERM)
        // Not accepting any more (the listening sockets are closed).
        #expect(eventually(2) { (try? TestConnection(port: proxy.port)) == nil })
        // The idle keep-alive connection is closed at once (by the proxy, not by our read timeout).
        let closing = Date()
        #expect(idle.readToEnd().isEmpty && idle.closedByPeer)
        #expect(Date().timeIntervalSince(closing) < 2)
        // The request in flight is answered, with Connection: close, then the connection closes.
        let answer = try slow.readResponse()
        #expect(answer.status == 200)
        #expect(answer.header("Connection")?.lowercased() == "close")
        #expect(slow.readToEnd().isEmpty && slow.closedByPeer)
        // The download, read only now (the proxy has been waiting on us), arrives intact.
        usleep(300_000)
        #expect(proxy.process.isRunning, "still draining")
        let (status, bytes, wrong) = try readStreamPattern(download)
        #expect(status == 200 && bytes == size && wrong == 0, "\(bytes) bytes, \(wrong) wrong")
        #expect(proxy.waitForExit(seconds: 5) == 0, "exit status 0 once drained: \(proxy.log)")
    }

    @Test func sigtermAnswersARequestPipelinedBehindAResponseAlreadyUnderWay() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]), workers: 2)
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 10)
        c.setReceiveBuffer(128 * 1024)
        let size = 32 * 1024 * 1024
        // The second request is pipelined behind a download whose head goes out before SIGTERM.
        try c.send("GET /stream?bytes=\(size) HTTP/1.1\r\nHost: x\r\n\r\nGET /behind HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.fill())
        usleep(100_000)
        proxy.signal(SIGTERM)
        usleep(200_000)
        let (status, bytes, wrong) = try readStreamPattern(c)
        #expect(status == 200 && bytes == size && wrong == 0)
        let behind = try c.readResponse()
        #expect(behind.status == 200 && behind.json["path"] as? String == "/behind")
        #expect(behind.header("Connection")?.lowercased() == "close")
        #expect(c.readToEnd().isEmpty && c.closedByPeer)
        #expect(proxy.waitForExit(seconds: 5) == 0)
    }

    @Test func theGracePeriodEndsTheDrainAndASecondSignalExitsAtOnce() throws {
        let backend = try startBackend()
        // A client that stops reading holds its download open: the grace period closes it.
        let short = try startProxy(config: proxyConfig(backends: [backend.port], extra: #","shutdown_grace_ms":400"#))
        let stalled = try TestConnection(port: short.port)
        try stalled.send("GET /stream?bytes=500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(stalled.fill())
        var start = Date()
        short.signal(SIGTERM)
        #expect(short.waitForExit(seconds: 5) == 0)
        let took = Date().timeIntervalSince(start)
        #expect(took > 0.35 && took < 3, "closed when shutdown_grace_ms (400 ms) ran out: \(took) s")
        #expect(short.log.contains("shutdown_grace_ms"))

        let long = try startProxy(config: proxyConfig(backends: [backend.port]))  // 30 s grace
        let stalled2 = try TestConnection(port: long.port)
        try stalled2.send("GET /stream?bytes=500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(stalled2.fill())
        long.signal(SIGTERM)
        usleep(300_000)
        #expect(long.process.isRunning, "draining, within the grace period")
        start = Date()
        long.signal(SIGTERM)
        #expect(long.waitForExit(seconds: 3) == 1, "a second signal exits at once, with status 1")
        #expect(Date().timeIntervalSince(start) < 2, "not after the 30 s grace period")
    }

    // MARK: Hot reload

    @Test func sighupWithABadFileChangesNothing() throws {
        let b1 = try startBackend()
        let path = writeTempFile(proxyConfig(backends: [b1.port]), suffix: ".json")
        let proxy = try ManagedProcess("proxy", ["--config", path, "--listen", "127.0.0.1:0", "--workers", "2"])
        defer { proxy.stop() }
        #expect(try get(proxy.port, "/before").status == 200)
        for (bad, expected) in [(#"{"backends": [{"url": "http://127.0.0.1:notaport"}]}"#, "backends[0].url"),
                                (#"{"backends": [{"url": "http://127.0.0.1:1"}], "timeouts": {"idle_ms": "x"}}"#, "timeouts.idle_ms"),
                                ("{\"backends\": [", "\(path):1:")] {
            try bad.write(toFile: path, atomically: false, encoding: .utf8)
            let failuresBefore = proxy.log.components(separatedBy: "reload failed").count
            proxy.signal(SIGHUP)
            #expect(eventually { proxy.log.components(separatedBy: "reload failed").count > failuresBefore })
            #expect(proxy.log.contains(expected), "the error names the place: \(proxy.log)")
            for i in 0..<4 {
                let r = try get(proxy.port, "/still/\(i)")
                #expect(r.status == 200 && r.json["backend"] as? String == "backend-\(b1.port)")
            }
            #expect(backendStates(proxy.port) == ["b1": true])
        }
        #expect(!proxy.log.contains("reload: "), "no reload was applied")
    }

    @Test func sighupWithAGoodFileSwitchesNewRequestsAndKeepsATransferInFlight() throws {
        let b1 = try startBackend(), b2 = try startBackend()
        let path = writeTempFile(proxyConfig(backends: [b1.port]), suffix: ".json")
        let proxy = try ManagedProcess("proxy", ["--config", path, "--listen", "127.0.0.1:0", "--workers", "2"])
        defer { proxy.stop() }
        let keepAlive = try TestConnection(port: proxy.port)
        #expect(try keepAlive.request("GET", "/first").json["backend"] as? String == "backend-\(b1.port)")
        // More than the socket buffers on the way can hold, so the proxy must wait for the reader.
        let size = 32 * 1024 * 1024
        let download = try TestConnection(port: proxy.port, timeoutSeconds: 10)
        download.setReceiveBuffer(128 * 1024)
        try download.send("GET /stream?bytes=\(size) HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(download.fill())

        // b1 is replaced by b2; the upstream timeout drops from 30 s to 400 ms.
        let next = proxyConfig(backends: [b2.port], upstreamMs: 400).replacingOccurrences(of: "\"b1\"", with: "\"b2\"")
        try next.write(toFile: path, atomically: false, encoding: .utf8)
        proxy.signal(SIGHUP)
        #expect(eventually { proxy.log.contains("reload: ") })
        let line = proxy.log.components(separatedBy: "\n").first { $0.contains("reload: ") } ?? ""
        #expect(line.contains("backends added b2") && line.contains("backends removed b1") && line.contains("timeouts"), "\(line)")

        // New requests — on new connections and on the idle keep-alive one — go to b2.
        for i in 0..<6 {
            let r = try get(proxy.port, "/new/\(i)")
            #expect(r.status == 200 && r.json["backend"] as? String == "backend-\(b2.port)")
        }
        #expect(try keepAlive.request("GET", "/next").json["backend"] as? String == "backend-\(b2.port)")
        // The line is logged once every worker has switched: each one now shows only b2.
        var workers = Set<Int>()
        for _ in 0..<64 where workers.count < 2 {
            let health = try get(proxy.port, "/_health").json
            let ids = (health["backends"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            #expect(ids == ["b2"], "worker \(health["worker"] ?? "?"): \(ids)")
            if let w = health["worker"] as? Int { workers.insert(w) }
        }
        #expect(workers.count == 2)
        // New requests get the new upstream timeout.
        let started = Date()
        #expect(try get(proxy.port, "/silent").status == 504)
        #expect(Date().timeIntervalSince(started) < 3, "upstream_ms 400 applies after the reload")
        // The download that started on b1 finishes intact.
        let (status, bytes, wrong) = try readStreamPattern(download)
        #expect(status == 200 && bytes == size && wrong == 0, "\(bytes) bytes, \(wrong) wrong")
    }

    @Test func sighupMovesTheListenerToANewAddress() throws {
        let backend = try startBackend()
        func freePort() -> UInt16 {
            let (fd, port) = listenOnLoopback()
            close(fd)
            return port
        }
        let first = freePort()
        var second = freePort()
        while second == first { second = freePort() }
        func config(_ port: UInt16) -> String {
            proxyConfig(backends: [backend.port]).replacingOccurrences(of: "{\"backends\"", with: "{\"listen\":\"127.0.0.1:\(port)\",\"backends\"")
        }
        let path = writeTempFile(config(first), suffix: ".json")
        let proxy = try ManagedProcess("proxy", ["--config", path, "--workers", "2"])
        defer { proxy.stop() }
        #expect(proxy.port == first)
        let before = try TestConnection(port: first)
        #expect(try before.request("GET", "/a").status == 200)
        try config(second).write(toFile: path, atomically: false, encoding: .utf8)
        proxy.signal(SIGHUP)
        #expect(eventually { (try? get(second, "/b").status) == 200 }, "\(proxy.log)")
        #expect(eventually { (try? TestConnection(port: first)) == nil }, "the old address is closed")
        #expect(try before.request("GET", "/c").status == 200, "a connection accepted before stays served")
        // Logged once every worker confirmed, which may be after the first of them served.
        #expect(eventually { proxy.log.contains("listen 127.0.0.1:\(first) -> 127.0.0.1:\(second)") }, "\(proxy.log)")
    }
}

/// Reads a `/stream` response and checks the test backend's byte pattern (offset % 251).
private func readStreamPattern(_ c: TestConnection) throws -> (status: Int, bytes: Int, wrong: Int) {
    var check = StreamPatternCheck()
    let r = try c.readResponse(discardBody: true) { check.consume($0) }
    return (r.status, check.bytes, check.wrongPieces)
}
