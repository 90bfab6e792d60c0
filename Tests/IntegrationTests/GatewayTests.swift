import Foundation
import Glibc
import Testing

/// The local dev gateway: routes, WebSocket tunnels, streamed events, the one-line start and the
/// error pages a browser gets.
@Suite(.serialized) struct GatewayTests {
    // MARK: Routing

    @Test func routesByHostAndPathWithStripPrefixAndHostPolicies() throws {
        let web = try startBackend(), api = try startBackend(), tenant = try startBackend(), exact = try startBackend()
        func url(_ b: ManagedProcess) -> String { "http://127.0.0.1:\(b.port)" }
        let proxy = try startProxy(config: """
            {"backends": [{"id": "web1", "url": "\(url(web))"}],
             "upstreams": {"api": {"backends": [{"url": "\(url(api))"}]},
                           "tenant": {"backends": [{"url": "\(url(tenant))"}]},
                           "exact": {"backends": [{"url": "\(url(exact))"}]}},
             "routes": [
               {"path": "/api", "upstream": "api", "strip_prefix": true},
               {"path": "/api/v2", "upstream": "tenant"},
               {"host": "*.example.test", "upstream": "tenant"},
               {"host": "admin.example.test", "upstream": "exact", "host_header": "backend"},
               {"host": "admin.example.test", "path": "/api", "upstream": "api", "host_header": "literal.internal"}
             ]}
            """)
        func ask(_ path: String, host: String = "app.local") throws -> (backend: Int, json: [String: Any]) {
            let c = try TestConnection(port: proxy.port)
            try c.send("GET \(path) HTTP/1.1\r\nHost: \(host)\r\n\r\n")
            let r = try c.readResponse()
            #expect(r.status == 200, "\(host) \(path): \(r.status) \(r.text)")
            let json = r.json
            return (json["port"] as? Int ?? -1, json)
        }
        func headers(_ json: [String: Any]) -> [String: String] { json["headers"] as? [String: String] ?? [:] }

        var r = try ask("/")
        #expect(r.backend == Int(web.port) && r.json["path"] as? String == "/", "no route matches: the default pool")
        r = try ask("/api/users?id=7")
        #expect(r.backend == Int(api.port) && r.json["path"] as? String == "/users?id=7")
        #expect(headers(r.json)["x-forwarded-prefix"] == "/api" && headers(r.json)["host"] == "app.local")
        r = try ask("/api")
        #expect(r.backend == Int(api.port) && r.json["path"] as? String == "/")
        r = try ask("/api?q=1")
        #expect(r.backend == Int(api.port) && r.json["path"] as? String == "/?q=1")
        r = try ask("/apix")
        #expect(r.backend == Int(web.port), "a prefix matches whole segments only")
        // /api/../etc is /etc, not under /api (routes match normalised paths): the default pool,
        // which gets the bytes sent; the /api backend never sees a target that climbs out of it.
        r = try ask("/api/../etc/passwd")
        #expect(r.backend == Int(web.port) && r.json["path"] as? String == "/api/../etc/passwd")
        r = try ask("/api/v2/items")
        #expect(r.backend == Int(tenant.port) && r.json["path"] as? String == "/api/v2/items", "the longest prefix wins")
        #expect(headers(r.json)["x-forwarded-prefix"] == nil)
        r = try ask("/api/users", host: "shop.example.test")
        #expect(r.backend == Int(tenant.port), "a wildcard host is more specific than any host, whatever the paths")
        r = try ask("/", host: "example.test")
        #expect(r.backend == Int(web.port), "*.example.test does not match example.test itself")
        r = try ask("/dashboard", host: "admin.example.test")
        #expect(r.backend == Int(exact.port), "an exact host beats the wildcard")
        #expect(headers(r.json)["host"] == "127.0.0.1:\(exact.port)", "host_header backend")
        #expect(headers(r.json)["x-forwarded-host"] == "admin.example.test")
        r = try ask("/api/x", host: "ADMIN.Example.Test:8080")
        #expect(r.backend == Int(api.port) && r.json["path"] as? String == "/api/x", "host matching ignores case and port")
        #expect(headers(r.json)["host"] == "literal.internal", "host_header literal")
        // A forged prefix header from the client is not passed on.
        let forged = try TestConnection(port: proxy.port).request("GET", "/", headers: ["X-Forwarded-Prefix": "/evil"]).json
        #expect(headers(forged)["x-forwarded-prefix"] == nil)
    }

    @Test func answers404WithAReasonWhenNoRouteMatchesAndThereIsNoDefaultPool() throws {
        let api = try startBackend()
        let config = """
            {"upstreams": {"api": {"backends": [{"url": "http://127.0.0.1:\(api.port)"}]}},
             "routes": [{"path": "/api/", "upstream": "api"}]}
            """
        let proxy = try startProxy(config: config)
        #expect(try get(proxy.port, "/api/ok").status == 200)
        let miss = try get(proxy.port, "/other")
        #expect(miss.status == 404)
        #expect(miss.text.contains("no route") && miss.text.contains("/other"), "\(miss.text)")
        // HEAD gets the status without a body, and the connection stays usable.
        let c = try TestConnection(port: proxy.port)
        let head = try c.request("HEAD", "/other")
        #expect(head.status == 404 && head.body.isEmpty)
        #expect(try c.request("GET", "/api/after-head").status == 200)
        // `--check` prints the routing table it understood.
        var output = ""
        let status = run(productsDirectory.appendingPathComponent("proxy").path,
                         ["--check", "--config", writeTempFile(config, suffix: ".json")], output: &output)
        #expect(status == 0)
        #expect(output.contains("route host * path /api/ -> api") && output.contains("anything else -> 404"), "\(output)")
    }

    // MARK: WebSockets and tunnels

    @Test func webSocketConversationThroughTheProxyWithIndependentClientAndServer() throws {
        let python = try pythonWithWebsockets()
        let scripts = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python")
        let server = try ManagedProcess(python, [scripts.appendingPathComponent("ws_server.py").path], absolute: true)
        defer { server.stop() }
        // upstream_ms 1 s: the conversation stays silent for 2 s, both ways, and must survive.
        let proxy = try startProxy(config: proxyConfig(backends: [server.port], upstreamMs: 1000))
        var output = ""
        let client = scripts.appendingPathComponent("ws_client.py").path
        let status = run(python, [client, "ws://127.0.0.1:\(proxy.port)/chat", "conversation", "2"], output: &output)
        #expect(status == 0, "text, binary, 1 MiB, ping/pong, silence, client close: \(output)")
        let closed = run(python, [client, "ws://127.0.0.1:\(proxy.port)/chat", "server-close"], output: &output)
        #expect(closed == 0 && output.contains("4000"), "the server's close (code 4000) reaches the client: \(output)")
        // Both tunnels ended: nothing left open toward the backend.
        #expect(eventually(3) { (try? backendStatesActive(proxy.port)) == 0 })
    }

    @Test func aTunnelKeepsBytesSentRightAfterThe101AndPassesHalfClosesOn() throws {
        let origin = RawUpgradeOrigin()
        defer { origin.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(origin.port)"}], "health_check": {"path": null}}
            """)
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        // Bytes sent right behind the upgrade request wait for the switch, then go through.
        try c.send("GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: raw-echo\r\n\r\nearly-client")
        let head = try c.readResponse(headRequest: true)
        #expect(head.status == 101)
        #expect(head.header("Upgrade") == "raw-echo" && head.header("Connection")?.lowercased() == "upgrade")
        #expect(c.waitForText("EARLY-SERVER", "EARLY-CLIENT", seconds: 3),
                "the backend's bytes after its 101 and the client's early bytes both arrive: \(String(decoding: c.buffered, as: UTF8.self)); the backend's side: \(origin.events)")
        try c.send("ping")
        #expect(c.waitForText("PING", seconds: 3), "the backend's side: \(origin.events)")
        // The client half-closes; the backend sees EOF, answers, then closes: the client gets both.
        c.shutdownWrite()
        let rest = String(decoding: c.readToEnd(), as: UTF8.self)
        #expect(rest.hasSuffix("BYE"), "after the half-close: \(rest); the backend's side: \(origin.events)")
        #expect(c.closedByPeer)
        #expect(origin.sawUpgradeHeaders, "Upgrade and Connection: upgrade reached the backend")
        // A reset from the backend closes the client's side of the tunnel too.
        let reset = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        try reset.send("GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: raw-echo\r\n\r\n")
        #expect(try reset.readResponse(headRequest: true).status == 101)
        try reset.send("reset-me")
        let resetStart = Date()
        _ = reset.readToEnd()
        #expect(Date().timeIntervalSince(resetStart) < 3, "closed at once, not after a timeout")
        #expect(eventually(3) { (try? backendStatesActive(proxy.port)) == 0 }, "both tunnels are gone")
        // An upgrade request with a body is not tunnelled (the rest of the body would be read as
        // the new protocol): the backend's 101 is then a protocol error.
        let withBody = try TestConnection(port: proxy.port)
        let answer = try withBody.request("POST", "/raw", headers: ["Connection": "Upgrade", "Upgrade": "raw-echo"],
                                          body: Array("0123456789".utf8))
        #expect(answer.status == 502)
        // A non-101 answer to an upgrade request is relayed as a normal response.
        let refused = try TestConnection(port: proxy.port).request("GET", "/no-upgrade",
                                                                   headers: ["Connection": "Upgrade", "Upgrade": "raw-echo"])
        #expect(refused.status == 426)
    }

    /// Issue 12 §1.16: SIGTERM used to cut every tunnel at once (20 tunnels, 0.0 s).
    @Test func aGracefulShutdownGivesOpenTunnelsTheGracePeriod() throws {
        let origin = RawUpgradeOrigin()
        defer { origin.stop() }
        let proxy = try startTunnelProxy(origin, shutdownGraceMs: 2500)
        let tunnels = try (0..<5).map { _ in try openRawTunnel(proxy.port) }
        let start = Date()
        proxy.signal(SIGTERM)
        usleep(300_000)
        // Still carrying bytes both ways during the grace period.
        for (i, c) in tunnels.enumerated() {
            try c.send("during-\(i)")
            #expect(c.waitForText("DURING-\(i)", seconds: 3), "tunnel \(i): \(String(decoding: c.buffered, as: UTF8.self))")
        }
        // The client closing its tunnel is an ordinary end: the backend answers and both close.
        tunnels[0].shutdownWrite()
        #expect(String(decoding: tunnels[0].readToEnd(), as: UTF8.self).hasSuffix("BYE"))
        // The rest are closed when the grace period is over, and the proxy exits then.
        #expect(proxy.waitForExit(seconds: 8) == 0)
        let took = Date().timeIntervalSince(start)
        #expect(took > 2.0 && took < 6, "exited after \(took) s")
        for c in tunnels.dropFirst() {
            _ = c.readToEnd()
            #expect(c.closedByPeer)
        }
    }

    @Test func aShutdownWithOnlyClosedTunnelsLeftEndsAtOnce() throws {
        let origin = RawUpgradeOrigin()
        defer { origin.stop() }
        let proxy = try startTunnelProxy(origin, shutdownGraceMs: 30000)
        let c = try openRawTunnel(proxy.port)
        let start = Date()
        proxy.signal(SIGTERM)
        usleep(200_000)
        c.shutdownWrite()
        _ = c.readToEnd()
        #expect(proxy.waitForExit(seconds: 5) == 0)
        #expect(Date().timeIntervalSince(start) < 4, "the last tunnel's end ends the drain, not the 30 s grace")
    }

    // MARK: Streaming

    @Test func serverSentEventsArriveOneByOneAsTheBackendWritesThem() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        let start = Date()
        try c.send("GET /sse?events=3&interval_ms=1000 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        var arrivals: [Double] = []
        var seen = 0
        while seen < 3 && Date().timeIntervalSince(start) < 6 {
            guard c.fill() else { break }
            let text = String(decoding: c.buffered, as: UTF8.self)
            let count = text.components(separatedBy: "data: event").count - 1
            while seen < count { arrivals.append(Date().timeIntervalSince(start)); seen += 1 }
        }
        #expect(arrivals.count == 3, "\(arrivals)")
        guard arrivals.count == 3 else { return }
        #expect(arrivals[0] < 0.5, "the first event at once: \(arrivals)")
        #expect(arrivals[1] - arrivals[0] > 0.7 && arrivals[2] - arrivals[1] > 0.7, "one a second, not batched: \(arrivals)")
    }

    // MARK: One-line start and error pages

    @Test func theOneLinerRoutesLoadBalancesAndExplainsFailuresInHTML() throws {
        let front1 = try startBackend(), front2 = try startBackend(), api = try startBackend()
        let (deadFD, deadPort) = listenOnLoopback()
        close(deadFD)  // nothing listens there now
        let proxy = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:\(front1.port)", "--to", "http://127.0.0.1:\(front2.port)",
                                                 "--to", "/api=http://127.0.0.1:\(api.port)", "--to", "/gone=http://127.0.0.1:\(deadPort)",
                                                 "--host-header", "backend", "--strip-prefix", "--listen", "127.0.0.1:0", "--workers", "2"])
        defer { proxy.stop() }
        var fronts = Set<Int>()
        for i in 0..<4 {
            let r = try TestConnection(port: proxy.port).request("GET", "/page/\(i)")
            fronts.insert(r.json["port"] as? Int ?? -1)
            let host = (r.json["headers"] as? [String: String])?["host"]
            #expect(host == "127.0.0.1:\(r.json["port"] as? Int ?? -1)", "--host-header backend: \(host ?? "none")")
        }
        #expect(fronts == [Int(front1.port), Int(front2.port)], "two --to without a path load-balance")
        let r = try get(proxy.port, "/api/users")
        #expect(r.json["port"] as? Int == Int(api.port) && r.json["path"] as? String == "/users")
        // The dead upstream: a browser gets a page naming the address nobody listens on.
        #expect(eventually(3) { backendStates(proxy.port)["gone1"] == false })
        let page = try TestConnection(port: proxy.port).request("GET", "/gone/x", headers: ["Accept": "text/html,*/*"])
        #expect(page.status == 503 && page.header("Content-Type")?.hasPrefix("text/html") == true)
        #expect(page.text.contains("nothing is listening on 127.0.0.1:\(deadPort)") && page.text.contains("gone"), "\(page.text)")
        let plain = try get(proxy.port, "/gone/x")
        #expect(plain.status == 503 && plain.header("Content-Type")?.hasPrefix("text/plain") == true)
        // A backend that hangs up mid-request: a 502 page that says how it was tried.
        let cut = try TestConnection(port: proxy.port).request("GET", "/api/close", headers: ["Accept": "text/html"])
        #expect(cut.status == 502 && cut.text.contains("api1") && cut.text.contains("closed the connection"), "\(cut.text)")
        // --help shows the one-liner.
        var help = ""
        run(productsDirectory.appendingPathComponent("proxy").path, ["--help"], output: &help)
        #expect(help.contains("--to http://localhost:5173 --to /api=http://localhost:8080"))
    }

    @Test func aRestartedDevServerIsReachedBeforeTheNextProbeAndProxyAnswersSaySo() throws {
        let (deadFD, port) = listenOnLoopback()
        close(deadFD)
        let proxy = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:\(port)", "--listen", "127.0.0.1:0", "--workers", "1"])
        defer { proxy.stop() }
        #expect(eventually(3) { backendStates(proxy.port)["backend1"] == false })
        let down = try get(proxy.port, "/x")
        #expect(down.status == 503 && down.header("Proxy-Status") == "swift-proxy; error=destination_unavailable", "\(down.status) \(down.headers)")
        #expect(down.text.contains("no healthy backend"), "one connect was tried, and failed: still the 503")
        // The dev server comes back: the next request reaches it although the probe (every
        // second) has not said so yet.
        let backend = try startBackend(port: port)
        defer { backend.stop() }
        let back = try get(proxy.port, "/x")
        #expect(back.status == 200 && back.header("Proxy-Status") == nil, "\(back.status) \(back.text)")
    }

    @Test(.timeLimit(.minutes(2)))
    func theDownPageReloadsItselfInChromiumWhenTheBackendReturns() throws {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let browser = try #require(chromium, "chromium is not installed: `make test` installs it (apt-get install chromium)")
        let python = try pythonWithWebsockets()
        let (deadFD, port) = listenOnLoopback()
        close(deadFD)
        let proxy = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:\(port)", "--listen", "127.0.0.1:0", "--workers", "1"])
        defer { proxy.stop() }
        var output = ""
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/down_page_check.py").path
        let rc = run(python, [script, "--url", "http://127.0.0.1:\(proxy.port)/app", "--backend-port", String(port),
                              "--chromium", browser, "--timeout", "60"], output: &output)
        let jsonLine = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        try #require(rc == 0, "down page check failed: \(output)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(jsonLine.utf8)) as? [String: Any], "\(output)")
        print("down page check: \(jsonLine)")
        #expect((result["down_title"] as? String)?.hasPrefix("503") == true && result["watching"] as? Bool == true, "\(result)")
        #expect((result["still_down_title"] as? String)?.hasPrefix("503") == true, "no reload while the backend is down: \(result)")
        #expect((result["watch_text"] as? String)?.contains("Still down") == true, "\(result)")
        #expect(result["final_title"] as? String == "back up" && (result["reloaded_after_s"] as? Double ?? 99) < 8, "\(result)")
        #expect((result["external_requests"] as? [Any])?.isEmpty == true && (result["page_errors"] as? [Any])?.isEmpty == true, "\(result)")
    }

    @Test func theGatewayListensOnLoopbackAndCheckProbesWhatStartingWould() throws {
        let (fd, port) = listenOnLoopback()
        close(fd)
        let proxy = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:1", "--listen", ":\(port)", "--workers", "1"])
        defer { proxy.stop() }
        let start = proxy.log.split(separator: "\n").first { $0.contains("listening on") }.map(String.init) ?? ""
        #expect(start.contains("listening on 127.0.0.1:\(port)"), "\(start)")
        if start.contains("also on [::1]:\(port)") {
            // Both loopback families answer (a browser may try either for localhost).
            let s = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            a.sin6_addr.__in6_u.__u6_addr8.15 = 1
            let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            #expect(rc == 0)
            close(s)
        }
        let binary = productsDirectory.appendingPathComponent("proxy").path
        var output = ""
        // The running gateway holds the port with SO_REUSEPORT: --check of the same address passes.
        #expect(run(binary, ["--to", "http://localhost:1", "--listen", "127.0.0.1:\(port)", "--check"], output: &output) == 0, "\(output)")
        #expect(output.contains("checked: every listen address can be bound; every backend host name resolves"), "\(output)")
        #expect(output.contains("backend backend1: http://localhost:1 (localhost is 127.0.0.1"), "\(output)")
        // Another program's port, a name that does not resolve: refused, saying which.
        let (busyFD, busy) = listenOnLoopback()
        defer { close(busyFD) }
        #expect(run(binary, ["--to", "http://localhost:1", "--listen", "127.0.0.1:\(busy)", "--check"], output: &output) == 2)
        #expect(output.contains("listen 127.0.0.1:\(busy): cannot listen on 127.0.0.1:\(busy): already in use (by another program"), "\(output)")
        #expect(run(binary, ["--to", "http://no-such-host.invalid:1", "--listen", "127.0.0.1:0", "--check"], output: &output) == 2)
        #expect(output.contains("backend backend1: no-such-host.invalid does not resolve"), "\(output)")
        let config = writeTempFile(#"{"backends": [{"url": "http://no-such-host.invalid:1"}], "listen": "127.0.0.1:0"}"#, suffix: ".json")
        #expect(run(binary, ["--config", config, "--check"], output: &output) == 1)
        #expect(output.contains("\(config): backend backend1: no-such-host.invalid does not resolve"), "\(output)")
        // One-line errors point at --help instead of printing it.
        #expect(run(binary, ["--to", "http://localhost:1", "--host-header", "backnd"], output: &output) == 2)
        #expect(output.contains(#"did you mean "backend"? (see `proxy --help`)"#) && !output.contains("usage:"), "\(output)")
        #expect(run(binary, ["--version"], output: &output) == 0 && output.hasPrefix("proxy 0.") && output.contains("libuv"), "\(output)")
    }
}

/// A backend that switches to a raw echo protocol: answers `Upgrade: raw-echo` with 101 and
/// "EARLY-SERVER" in the same write, then echoes upper-cased; on the client's half-close it
/// sends "BYE" and closes. `/no-upgrade` gets 426. Connections without a request (probes) close.
final class RawUpgradeOrigin: @unchecked Sendable {
    let fd: Int32
    let port: UInt16
    private let lock = NSLock()
    private var _sawUpgradeHeaders = false
    private var _events: [String] = []
    var sawUpgradeHeaders: Bool { lock.lock(); defer { lock.unlock() }; return _sawUpgradeHeaders }
    /// What each connection received and how it ended, for failure messages.
    var events: String { lock.lock(); defer { lock.unlock() }; return _events.joined(separator: "; ") }

    init() {
        (fd, port) = listenOnLoopback()
        acceptEachOnItsOwnThread(fd) { [self] c in serve(c) }
    }

    private func note(_ c: Int32, _ event: String) {
        lock.lock(); _events.append("fd \(c) \(event)"); lock.unlock()
    }

    private func serve(_ c: Int32) {
        defer { close(c) }
        // Generous: a tunnel's silence ends only when a test is done with it, and a loaded CI
        // machine can hold a test thread for seconds between two steps.
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        func send(_ s: String) { _ = Array(s.utf8).withUnsafeBytes { Glibc.send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        func receive() -> Int {
            let n = retryingOnEINTR { buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) } }
            note(c, n > 0 ? "received \(String(decoding: buf[0..<min(n, 40)], as: UTF8.self).debugDescription)"
                          : n == 0 ? "got EOF" : "recv failed, errno \(errno)")
            return n
        }
        while data.firstRange(of: [13, 10, 13, 10]) == nil {
            let n = receive()
            if n <= 0 { return }
            data.append(contentsOf: buf[0..<n])
        }
        let end = data.firstRange(of: [13, 10, 13, 10])!
        let head = String(decoding: data[..<end.lowerBound], as: UTF8.self).lowercased()
        var rest = Array(data[end.upperBound...])
        if head.hasPrefix("get /no-upgrade") {
            send("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
            return
        }
        if head.contains("\r\nupgrade: raw-echo") && head.contains("\r\nconnection: upgrade") {
            lock.lock(); _sawUpgradeHeaders = true; lock.unlock()
        }
        send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw-echo\r\nConnection: Upgrade\r\n\r\nEARLY-SERVER ")
        while true {
            if !rest.isEmpty {
                send(String(decoding: rest, as: UTF8.self).uppercased())
                rest.removeAll()
            }
            let n = receive()
            if n == 0 { send("BYE"); return }  // the client half-closed: answer, then close
            if n < 0 { return }
            if String(decoding: buf[0..<n], as: UTF8.self).contains("reset-me") {
                var l = linger(l_onoff: 1, l_linger: 0)  // close with RST
                setsockopt(c, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                return
            }
            rest.append(contentsOf: buf[0..<n])
        }
    }

    func stop() {
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// A proxy in front of `origin` (no health probes) with `shutdown_grace_ms`.
private func startTunnelProxy(_ origin: RawUpgradeOrigin, shutdownGraceMs: Int) throws -> ManagedProcess {
    try startProxy(config: """
        {"backends": [{"url": "http://127.0.0.1:\(origin.port)"}], "health_check": {"path": null},
         "shutdown_grace_ms": \(shutdownGraceMs)}
        """)
}

/// A client connection switched (101) to a raw-echo tunnel through the proxy on `port`.
private func openRawTunnel(_ port: UInt16) throws -> TestConnection {
    let c = try TestConnection(port: port, timeoutSeconds: 5)
    try c.send("GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: raw-echo\r\n\r\n")
    #expect(try c.readResponse(headRequest: true).status == 101)
    return c
}
