import Foundation
import Testing

/// Balancing policies end to end: weights honoured by round-robin, a hash key keeping each
/// client on one backend across workers, and only the keys of a backend that goes down moving.
@Suite(.serialized) struct BalancingTests {
    /// Backends with these weights behind a proxy balancing with `balance` (JSON members).
    private func start(weights: [Int], balance: String, workers: Int) throws -> (backends: [ManagedProcess], proxy: ManagedProcess) {
        let backends = try weights.map { _ in try startBackend() }
        let list = zip(backends, weights).enumerated().map { i, bw in
            "{\"id\":\"b\(i + 1)\",\"url\":\"http://127.0.0.1:\(bw.0.port)\",\"weight\":\(bw.1)}"
        }
        let config = """
            {"backends":[\(list.joined(separator: ","))],\(balance),
             "health_check":{"path":"/health","interval_ms":100,"timeout_ms":500,"healthy_threshold":1,"unhealthy_threshold":1},
             "access_log":null}
            """
        return (backends, try startProxy(config: config, workers: workers))
    }

    private func servedBy(_ port: UInt16, _ path: String = "/", headers: [String: String] = [:]) throws -> Int {
        let r = try get(port, path, headers: headers)
        guard r.status == 200, let p = r.json["port"] as? Int else { throw HarnessError("unexpected answer \(r.status): \(r.text)") }
        return p
    }

    @Test func weightedRoundRobinGivesEachBackendItsShare() throws {
        let (backends, proxy) = try start(weights: [3, 1, 1], balance: "\"balance\":\"round_robin\"", workers: 1)
        defer { proxy.stop(); backends.forEach { $0.stop() } }
        var counts: [Int: Int] = [:]
        for _ in 0..<50 { counts[try servedBy(proxy.port), default: 0] += 1 }
        #expect(backends.map { counts[Int($0.port)] ?? 0 } == [30, 10, 10], "\(counts)")
    }

    @Test(arguments: ["maglev", "ring_hash"])
    func aHashKeyKeepsEachClientOnOneBackendAndOnlyTheKeysOfALostBackendMove(_ policy: String) throws {
        let (backends, proxy) = try start(weights: [1, 1, 1], balance: "\"balance\":\"\(policy)\",\"hash_key\":\"header:X-User\"", workers: 2)
        defer { proxy.stop(); backends.forEach { $0.stop() } }
        var home: [String: Int] = [:]
        for u in 0..<30 {
            let user = "user-\(u)"
            // Fresh connections land on either worker: both send the user to one backend.
            let seen = Set(try (0..<3).map { _ in try servedBy(proxy.port, headers: ["X-User": user]) })
            #expect(seen.count == 1, "\(user) went to \(seen)")
            home[user] = seen.first
        }
        #expect(Set(home.values).count == 3, "30 users spread over the three backends: \(home)")
        // Without the key: round-robin.
        let keyless = Set(try (0..<6).map { _ in try servedBy(proxy.port) })
        #expect(keyless.count >= 2)
        // Backend 2 goes away: its users move, nobody else does.
        let lost = Int(backends[1].port)
        backends[1].stop()
        #expect(try eventually(5) { try servedBy(proxy.port, headers: ["X-User": home.first { $0.value == lost }!.key]) != lost })
        for (user, port) in home {
            let now = try servedBy(proxy.port, headers: ["X-User": user])
            if port == lost { #expect(now != lost) } else { #expect(now == port, "\(user) moved from \(port) to \(now)") }
        }
    }
}

/// Passive health end to end: a backend that passes its health checks but resets every request
/// is ejected after `consecutive_failures`, shows as ejected, and comes back when it is due.
@Suite(.serialized) struct OutlierDetectionTests {
    @Test func aFlakyBackendIsEjectedAndReturns() throws {
        let good = try startBackend()
        let flaky = ScriptedOrigin { conn, _ in conn.reset(); return .close }
        defer { good.stop(); flaky.stop() }
        let config = """
            {"backends":[{"id":"good","url":"http://127.0.0.1:\(good.port)"},{"id":"flaky","url":"http://127.0.0.1:\(flaky.port)"}],
             "health_check":{"path":"/health","interval_ms":60000,"timeout_ms":500},
             "outlier_detection":{"consecutive_failures":3,"base_ejection_ms":700},
             "pool":{"idle_timeout_ms":200},"limits":{"max_upstream_attempts":1},"access_log":null}
            """
        let proxy = try startProxy(config: config, workers: 1)
        defer { proxy.stop() }
        var failed = 0
        for _ in 0..<20 { if try get(proxy.port, "/").status != 200 { failed += 1 } }
        #expect(failed == 3, "three failed attempts, then only the good backend")
        let health = try get(proxy.port, "/_health").json
        let flakyEntry = (health["backends"] as? [[String: Any]])?.first { $0["id"] as? String == "flaky" }
        #expect(flakyEntry?["ejected"] as? Bool == true && flakyEntry?["healthy"] as? Bool == true, "\(health)")
        let metrics = try get(proxy.port, "/_metrics").text
        #expect(metrics.contains("proxy_backend_ejected{upstream=\"default\",backend=\"flaky\"} 1"), "\(metrics.prefix(300))")
        #expect(metrics.contains("proxy_backend_ejections_total{upstream=\"default\",backend=\"flaky\"} 1"))
        // Due after 700 ms (the worker's sweep, every 50 ms here, ends it): the flaky one gets
        // requests again.
        #expect(try eventually(5) {
            (try get(proxy.port, "/_health").json["backends"] as? [[String: Any]])?.first { $0["id"] as? String == "flaky" }?["ejected"] as? Bool == false
        })
        var again = 0
        for _ in 0..<4 { if try get(proxy.port, "/").status != 200 { again += 1 } }
        #expect(again >= 1, "back in rotation")
    }
}

/// Retries end to end: a 503 or a reset sent to another backend for a GET, never for a POST with
/// a body, and the budget capping them under a failing backend.
@Suite(.serialized) struct RetryTests {
    private func config(_ ports: [UInt16], retries: String, extra: String = "") -> String {
        let list = ports.enumerated().map { "{\"id\":\"b\($0.offset + 1)\",\"url\":\"http://127.0.0.1:\($0.element)\"}" }
        return """
            {"backends":[\(list.joined(separator: ","))],"retries":\(retries),
             "outlier_detection":{"consecutive_failures":0},
             "health_check":{"path":"/health","interval_ms":60000,"timeout_ms":500},"access_log":null\(extra)}
            """
    }

    @Test func aFailedGetGoesToAnotherBackendAndAPostWithABodyDoesNot() throws {
        let good = try startBackend()
        let unavailable = ScriptedOrigin { conn, _ in
            conn.send("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
            return .keepReading
        }
        let resetting = ScriptedOrigin { conn, _ in conn.reset(); return .close }
        defer { good.stop(); unavailable.stop(); resetting.stop() }
        // The failing backend is first: round-robin on one worker sends the first request there.
        let proxy = try startProxy(config: config([unavailable.port, good.port], retries: #"{"attempts":1,"on":["503","reset"]}"#), workers: 1)
        defer { proxy.stop() }
        for _ in 0..<4 {
            let r = try get(proxy.port, "/echo")
            #expect(r.status == 200 && r.json["port"] as? Int == Int(good.port), "\(r.status) \(r.text)")
        }
        // Each retry moves the rotation on to the good backend, so the next request starts at
        // the failing one again (as nginx's round-robin with proxy_next_upstream does).
        #expect(unavailable.requests.count == 4, "every request tried it first")
        let metrics = try get(proxy.port, "/_metrics").text
        #expect(metrics.contains("proxy_upstream_retried_total{upstream=\"default\",reason=\"503\"} 4"), "\(metrics)")

        let resets = try startProxy(config: config([resetting.port, good.port], retries: #"{"attempts":1,"on":["reset"]}"#), workers: 1)
        defer { resets.stop() }
        #expect(try get(resets.port, "/a").status == 200, "a GET reset by the first backend is answered by the second")
        // A POST with a body is never sent twice: its reset is the client's 502.
        var statuses: [Int] = []
        for _ in 0..<2 {
            statuses.append(try TestConnection(port: resets.port).request("POST", "/p", body: Array("x=1".utf8)).status)
        }
        #expect(statuses.contains(502), "\(statuses)")
        #expect(resetting.requests.filter { $0.hasPrefix("POST") }.count == 1, "the POST reached the resetting backend once")
    }

    @Test func theBudgetCapsRetriesUnderAFailingBackend() throws {
        let good = try startBackend()
        let unavailable = ScriptedOrigin { conn, _ in
            conn.send("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            return .keepReading
        }
        defer { good.stop(); unavailable.stop() }
        let proxy = try startProxy(config: config([unavailable.port, good.port],
                                                  retries: #"{"attempts":1,"on":["503"],"budget_percent":0,"min_retries_per_s":0}"#), workers: 1)
        defer { proxy.stop() }
        var served = 0, refused = 0
        for _ in 0..<60 {
            switch try get(proxy.port, "/").status {
            case 200: served += 1
            case 503: refused += 1
            default: break
            }
        }
        // Every request meets the failing backend first (see above) until the budget is spent:
        // 10 retries (its capacity; nothing is deposited, no floor), then 503s. The rotation
        // then alternates: a refused request leaves the next one to the good backend.
        #expect(refused + served == 60 && refused > 20 && served >= 10 && served < 40, "served \(served), refused \(refused)")
        let metrics = try get(proxy.port, "/_metrics").text
        #expect(metrics.contains("proxy_upstream_retried_total{upstream=\"default\",reason=\"503\"} 10"), "\(metrics.suffix(2000))")
        #expect(metrics.contains("proxy_upstream_retries_over_budget_total{upstream=\"default\"} \(refused)"), "\(metrics.suffix(2000))")
    }
}

/// Sticky sessions end to end: the cookie a response sets keeps a client on its backend, and
/// when that backend is gone the client is moved and told its new one.
@Suite(.serialized) struct StickySessionTests {
    @Test func aStickyCookieKeepsAClientOnItsBackendAndFailsOver() throws {
        let backends = try (0..<3).map { _ in try startBackend() }
        defer { backends.forEach { $0.stop() } }
        let list = backends.enumerated().map { "{\"id\":\"s\($0.offset)\",\"url\":\"http://127.0.0.1:\($0.element.port)\"}" }
        let proxy = try startProxy(config: """
            {"backends":[\(list.joined(separator: ","))],"sticky":{"cookie":"srv","max_age_s":600},
             "health_check":{"path":"/health","interval_ms":100,"timeout_ms":500,"healthy_threshold":1,"unhealthy_threshold":1},
             "access_log":null}
            """, workers: 2)
        defer { proxy.stop() }
        let first = try get(proxy.port, "/")
        guard let setCookie = first.header("set-cookie"), let port = first.json["port"] as? Int else {
            Issue.record("no Set-Cookie: \(first.headers)")
            return
        }
        #expect(setCookie.hasPrefix("srv=") && setCookie.contains("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"), "\(setCookie)")
        #expect(!setCookie.contains("127.0.0.1") && !setCookie.contains(String(port)), "opaque: \(setCookie)")
        let cookie = String(setCookie.split(separator: ";")[0])
        for _ in 0..<10 {
            let r = try get(proxy.port, "/", headers: ["Cookie": "a=1; \(cookie)"])
            #expect(r.json["port"] as? Int == port && r.header("set-cookie") == nil, "stays on \(port): \(r.json["port"] ?? "?")")
        }
        // Its backend goes away: the client is moved, and given the new cookie.
        backends.first { Int($0.port) == port }!.stop()
        #expect(try eventually(5) { try get(proxy.port, "/", headers: ["Cookie": cookie]).status == 200 })
        let moved = try get(proxy.port, "/", headers: ["Cookie": cookie])
        #expect(moved.json["port"] as? Int != port)
        #expect(moved.header("set-cookie")?.hasPrefix("srv=") == true && moved.header("set-cookie") != setCookie)
        // A forged value is ignored (and replaced).
        let forged = try get(proxy.port, "/", headers: ["Cookie": "srv=127.0.0.1:1"])
        #expect(forged.status == 200 && forged.header("set-cookie") != nil)
    }
}

/// The runtime API: drain, disable, enable and weight, from a loopback client.
@Suite(.serialized) struct RuntimeAPITests {
    @Test func drainDisableEnableAndWeightChangeWhereRequestsGo() throws {
        let a = try startBackend(), b = try startBackend()
        defer { a.stop(); b.stop() }
        let proxy = try startProxy(config: """
            {"backends":[{"id":"a","url":"http://127.0.0.1:\(a.port)"},{"id":"b","url":"http://127.0.0.1:\(b.port)"}],
             "health_check":{"path":"/health","interval_ms":60000,"timeout_ms":500},"access_log":null}
            """, workers: 1)
        defer { proxy.stop() }
        func ports(_ n: Int) throws -> [Int: Int] {
            var c: [Int: Int] = [:]
            for _ in 0..<n { c[try get(proxy.port, "/").json["port"] as? Int ?? 0, default: 0] += 1 }
            return c
        }
        func admin(_ method: String, _ path: String) throws -> HTTPResponse {
            try TestConnection(port: proxy.port).request(method, "/_admin/backends/\(path)")
        }
        let drained = try admin("POST", "a/drain")
        #expect(drained.status == 200 && drained.json["state"] as? String == "draining", "\(drained.text)")
        #expect(try ports(6) == [Int(b.port): 6])
        #expect(try admin("POST", "a/enable").json["state"] as? String == "enabled")
        #expect(try ports(6) == [Int(a.port): 3, Int(b.port): 3])
        #expect(try admin("POST", "b/disable").status == 200)
        #expect(try ports(4) == [Int(a.port): 4])
        _ = try admin("POST", "b/enable")
        let weighted = try admin("PUT", "a/weight/3")
        #expect(weighted.status == 200 && weighted.json["weight"] as? Int == 3, "\(weighted.text)")
        // Weights reach the balancer on the worker's next sweep (at least every second).
        #expect(try eventually(5) { try ports(8) == [Int(a.port): 6, Int(b.port): 2] })
        let health = try get(proxy.port, "/_health").json["backends"] as? [[String: Any]]
        #expect(health?.first { $0["id"] as? String == "a" }?["weight"] as? Int == 3)
        // Errors.
        #expect(try admin("POST", "nope/drain").status == 404)
        #expect(try admin("PUT", "a/weight/0").status == 400)
        #expect(try admin("PUT", "a/weight?value=1001").status == 400)
        #expect(try admin("POST", "a/weight/2").status == 405)
        #expect(try admin("POST", "a/explode").status == 405)
        #expect(try admin("PUT", "a/weight?value=2").json["weight"] as? Int == 2)
    }

    @Test func drainingABackendLetsALongDownloadFromItFinish() throws {
        let a = try startBackend(), b = try startBackend()
        defer { a.stop(); b.stop() }
        let proxy = try startProxy(config: """
            {"backends":[{"id":"a","url":"http://127.0.0.1:\(a.port)"},{"id":"b","url":"http://127.0.0.1:\(b.port)"}],
             "balance":"least_request","health_check":{"path":"/health","interval_ms":60000,"timeout_ms":500},"access_log":null}
            """, workers: 1)
        defer { proxy.stop() }
        // 32 MiB from backend a to a reader with a small window: still streaming when a is drained.
        let size = 32 << 20
        let download = try TestConnection(port: proxy.port, receiveBuffer: 16384)
        try download.send("GET /stream?bytes=\(size) HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(eventually { (try? get(proxy.port, "/_health").json["backends"] as? [[String: Any]])?
            .contains { $0["active_connections"] as? Int == 1 } == true })
        let serving = ((try get(proxy.port, "/_health").json["backends"] as? [[String: Any]]) ?? [])
            .first { $0["active_connections"] as? Int == 1 }?["id"] as? String ?? "?"
        let other = serving == "a" ? b.port : a.port
        let drained = try TestConnection(port: proxy.port).request("POST", "/_admin/backends/\(serving)/drain")
        #expect(drained.status == 200, "\(drained.text)")
        // (Nothing is read yet, so the download is still in flight: the window stops it.)
        let state = ((try get(proxy.port, "/_health").json["backends"] as? [[String: Any]]) ?? []).first { $0["id"] as? String == serving }
        #expect(state?["state"] as? String == "draining" && state?["active_connections"] as? Int == 1, "\(String(describing: state))")
        // New requests go to the other backend at once…
        for _ in 0..<4 { #expect(try get(proxy.port, "/after").json["port"] as? Int == Int(other)) }
        // …and the download from the drained one finishes, every byte in order.
        var check = StreamPatternCheck()
        let r = try download.readResponse(onBody: { check.consume($0) })
        #expect(r.status == 200)
        #expect(check.bytes == size && check.wrongPieces == 0, "\(check.bytes) bytes, \(check.wrongPieces) wrong pieces")
    }
}

/// `max_connections_per_backend` and its queue: requests beyond the limit wait and are served in
/// turn, a full queue answers 503 at once, a wait past `queue.timeout_ms` answers 503.
@Suite(.serialized) struct BackendQueueTests {
    @Test func requestsBeyondTheLimitWaitThenGoOnOrAreRefused() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"max_connections_per_backend":1,
             "queue":{"max":2,"timeout_ms":3000},"retries":{"attempts":0},
             "health_check":{"path":"/health","interval_ms":60000,"timeout_ms":2000},"access_log":null}
            """, workers: 1)
        defer { proxy.stop() }
        // Four slow requests at once: one runs, two wait their turn, one finds the queue full.
        final class Statuses: @unchecked Sendable {
            let lock = NSLock()
            var list: [Int] = []
            func add(_ s: Int) { lock.lock(); list.append(s); lock.unlock() }
            var all: [Int] { lock.lock(); defer { lock.unlock() }; return list }
        }
        let statuses = Statuses()
        let group = DispatchGroup()
        let start = Date()
        // Threads of their own (the global queue may run only as many blocks as there are cores).
        for i in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                usleep(UInt32(i) * 30_000)  // in this order
                let s = (try? get(proxy.port, "/delay?ms=500").status) ?? -1
                statuses.add(s)
                group.leave()
            }
        }
        #expect(group.wait(timeout: .now() + 10) == .success)
        let got = statuses.all.sorted()
        #expect(got == [200, 200, 200, 503], "\(got)")
        #expect(Date().timeIntervalSince(start) >= 1.45, "the three ran one after another")
    }

    @Test func aWaitPastTheQueueTimeoutIs503() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"max_connections_per_backend":1,
             "queue":{"max":10,"timeout_ms":150},"retries":{"attempts":0},
             "health_check":{"path":"/health","interval_ms":60000,"timeout_ms":2000},"access_log":null}
            """, workers: 1)
        defer { proxy.stop() }
        let slow = DispatchGroup()
        slow.enter()
        Thread.detachNewThread { _ = try? get(proxy.port, "/delay?ms=3000"); slow.leave() }
        usleep(100_000)
        let r = try get(proxy.port, "/")
        #expect(r.status == 503 && r.text.contains("queue.timeout_ms 150"), "\(r.status) \(r.text)")
        // Waits that timed out free their places: the queue (max 10) still takes requests.
        for _ in 0..<12 {
            let again = try get(proxy.port, "/")
            #expect(again.status == 503 && again.text.contains("waited"), "\(again.text)")
            if again.status != 503 { break }
        }
        #expect(slow.wait(timeout: .now() + 5) == .success)
        #expect(try get(proxy.port, "/").status == 200, "room again")
    }
}
