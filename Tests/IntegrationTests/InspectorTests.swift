import Foundation
import Testing

/// The request inspector (`inspect`, `/_inspect`) through a running proxy: its JSON API (list,
/// detail, masking, limits, replay, refusals), and its page in headless Chromium
/// (`Python/inspector_check.py`: the list, a filter, the detail, copy as curl, replay, a row
/// arriving live).
@Suite(.serialized) struct InspectorTests {
    /// One request to the inspector, as its page sends it (`Host: 127.0.0.1:PORT`; POSTs with
    /// `X-Inspect-Action`).
    private func ask(_ port: UInt16, _ path: String, method: String = "GET", host: String? = nil, action: Bool = true,
                     extra: String = "") throws -> HTTPResponse {
        let c = try TestConnection(port: port)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host ?? "127.0.0.1:\(port)")\r\nConnection: close\r\n" + extra
        if method == "POST" { head += (action ? "X-Inspect-Action: test\r\n" : "") + "Content-Length: 0\r\n" }
        try c.send(head + "\r\n")
        return try c.readResponse()
    }

    private func json(_ port: UInt16, _ path: String, method: String = "GET", action: Bool = true) throws -> (Int, [String: Any]) {
        let r = try ask(port, path, method: method, action: action)
        let object = (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] ?? [:]
        return (r.status, object)
    }

    private func items(_ port: UInt16) throws -> [[String: Any]] {
        try json(port, "/_inspect/api/requests").1["items"] as? [[String: Any]] ?? []
    }

    @Test func recordsBoundedMaskedAndReplayable() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}], "health_check": {"path": null, "interval_ms": 60000},
             "upstreams": {"dead": {"backends": [{"url": "http://127.0.0.1:1"}], "health_check": {"path": null, "interval_ms": 60000}}},
             "routes": [{"path": "/dead", "upstream": "dead"}, {"path": "/", "upstream": "default"}],
             "inspect": {"enabled": true, "max_requests": 5, "max_body_bytes": 1000}, "access_log": null}
            """, workers: 1)
        defer { proxy.stop() }
        let body = Array(("{\"n\": \"" + String(repeating: "x", count: 1000) + "\"}").utf8)  // 1,009 bytes: over max_body_bytes
        let posted = try TestConnection(port: proxy.port).request("POST", "/echo?x=1", headers: ["Authorization": "Bearer top-secret", "Cookie": "s=1",
                                                                                           "Content-Type": "application/json"], body: body)
        #expect(posted.status == 200)
        var list = try items(proxy.port)
        #expect(list.count == 1)
        let first = try #require(list.first)
        #expect(first["method"] as? String == "POST" && first["target"] as? String == "/echo?x=1" && first["status"] as? Int == 200)
        #expect(first["route"] as? String == "/" && first["upstream"] as? String == "default" && first["request_bytes"] as? Int == 1009)
        let seq = try #require(first["seq"] as? Int)
        let (status, detail) = try json(proxy.port, "/_inspect/api/requests/\(seq)")
        #expect(status == 200)
        let request = detail["request"] as? [String: Any] ?? [:]
        let head = request["head"] as? [[String]] ?? []
        #expect(head.contains { $0[0] == "Authorization" && !$0[1].contains("top-secret") && $0[1].contains("hidden") })
        #expect(head.contains { $0[0] == "Cookie" && !$0[1].contains("s=1") })
        let reqBody = request["body"] as? [String: Any] ?? [:]
        #expect(reqBody["size"] as? Int == 1009 && reqBody["captured"] as? Int == 1000 && reqBody["truncated"] as? Bool == true)
        #expect((detail["curl"] as? String)?.hasPrefix("curl -X 'POST' 'http://") == true)
        #expect((detail["curl"] as? String)?.contains("top-secret") == false)
        let timings = detail["timings"] as? [String: Any] ?? [:]
        #expect(timings["total_ms"] is Double && timings["first_byte_ms"] is Double)

        // A body not recorded in full is not replayed; the inspector's own requests are not listed.
        let (refused, why) = try json(proxy.port, "/_inspect/api/replay/\(seq)", method: "POST")
        #expect(refused == 409 && (why["error"] as? String)?.contains("max_body_bytes") == true)
        #expect(try items(proxy.port).count == 1)

        // A replay goes through the proxy again (the original's secrets included) and is listed as such.
        let got = try TestConnection(port: proxy.port).request("GET", "/hello", headers: ["Authorization": "Bearer again"])
        #expect(got.status == 200)
        list = try items(proxy.port)
        let hello = try #require(list.first { $0["target"] as? String == "/hello" }?["seq"] as? Int)
        #expect(hello == seq + 1, "the inspector's own requests, never listed, take no numbers")
        let (accepted, started) = try json(proxy.port, "/_inspect/api/replay/\(hello)", method: "POST")
        #expect(accepted == 202 && started["replay_of"] as? Int == hello)
        var replay: [String: Any]? = nil
        #expect(eventually(5) {
            replay = (try? items(proxy.port))?.first { $0["replay_of"] as? Int == hello && $0["state"] as? String == "done" }
            return replay != nil
        })
        let replaySeq = try #require(replay?["seq"] as? Int)
        let replayed = try json(proxy.port, "/_inspect/api/requests/\(replaySeq)").1
        let echoed = ((replayed["response"] as? [String: Any])?["body"] as? [String: Any])?["data"] as? String ?? ""
        #expect(echoed.contains("Bearer again"), "the backend got the original Authorization: \(echoed)")
        #expect(replay?["status"] as? Int == 200)

        // The proxy's own answers are recorded with their reason; the list keeps max_requests.
        let dead = try TestConnection(port: proxy.port).request("GET", "/dead")
        #expect(dead.status == 502 || dead.status == 503)
        let failed = try #require(try items(proxy.port).first { $0["target"] as? String == "/dead" })
        #expect((failed["error"] as? String)?.isEmpty == false && failed["upstream"] as? String == "dead")
        // A body the proxy never took in full (answered before it was read) is not replayed.
        let unread = try TestConnection(port: proxy.port).request("POST", "/dead", body: Array("abc".utf8))
        #expect(unread.status == 502 || unread.status == 503)
        let unreadSeq = try #require(try items(proxy.port).first { $0["method"] as? String == "POST" && $0["target"] as? String == "/dead" }?["seq"] as? Int)
        let (incomplete, whyNot) = try json(proxy.port, "/_inspect/api/replay/\(unreadSeq)", method: "POST")
        #expect(incomplete == 409 && (whyNot["error"] as? String)?.contains("did not arrive in full") == true, "\(whyNot)")
        for i in 0..<8 { _ = try TestConnection(port: proxy.port).request("GET", "/fill/\(i)") }
        list = try items(proxy.port)
        #expect(list.count == 5, "max_requests")
        #expect(list.first?["target"] as? String == "/fill/7")
        #expect(try json(proxy.port, "/_inspect/api/requests/\(seq)").0 == 404)

        // Actions need X-Inspect-Action (no cross-site form can send it); a name that is not
        // this machine's gets nothing (DNS rebinding).
        #expect(try json(proxy.port, "/_inspect/api/clear", method: "POST", action: false).0 == 403)
        #expect(try ask(proxy.port, "/_inspect/api/requests", host: "evil.example:8080").status == 403)
        #expect(try ask(proxy.port, "/_inspect/api/requests", host: "app.localhost:8080").status == 200)
        // Another origin's page: its preflight is refused by the proxy (never passed to a backend
        // that might allow it), and an action that names another origin or site is refused.
        let preflight = try ask(proxy.port, "/_inspect/api/clear", method: "OPTIONS",
                                extra: "Origin: http://evil.localhost:5000\r\nAccess-Control-Request-Method: POST\r\n")
        #expect(preflight.status == 405 && preflight.header("allow") == "GET, HEAD, POST" && preflight.header("access-control-allow-origin") == nil)
        #expect(try ask(proxy.port, "/_inspect/api/clear", method: "POST", extra: "Origin: http://evil.example\r\n").status == 403)
        #expect(try ask(proxy.port, "/_inspect/api/clear", method: "POST", extra: "Sec-Fetch-Site: cross-site\r\n").status == 403)
        #expect(try ask(proxy.port, "/_inspect/api/clear", method: "POST", extra: "Sec-Fetch-Site: same-site\r\n").status == 403)
        #expect(try ask(proxy.port, "/_inspect/api/requests", extra: "Sec-Fetch-Site: same-origin\r\nOrigin: http://127.0.0.1:\(proxy.port)\r\n").status == 200)
        #expect(try ask(proxy.port, "/_inspect/api/clear", method: "POST", extra: "Sec-Fetch-Site: same-origin\r\nOrigin: http://127.0.0.1:\(proxy.port)\r\n").status == 200)

        // The page, and a clear error for an unknown resource.
        let page = try ask(proxy.port, "/_inspect")
        #expect(page.status == 200 && page.text.contains("/_inspect/api/") == false && page.text.contains("'/_inspect'"))
        #expect(try json(proxy.port, "/_inspect/api/nothing").0 == 404)
    }

    @Test func offUnlessEnabledAndOnInToMode() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let plain = try startProxy(config: #"{"backends": [{"url": "http://127.0.0.1:\#(backend.port)"}], "access_log": null}"#)
        defer { plain.stop() }
        // Off: the path belongs to the backends (the test backend echoes it).
        let r = try TestConnection(port: plain.port).request("GET", "/_inspect/api/requests")
        #expect(r.status == 200 && String(decoding: r.body, as: UTF8.self).contains("\"backend\""))

        let gateway = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:\(backend.port)", "--listen", "127.0.0.1:0", "--access-log", "off"])
        defer { gateway.stop() }
        _ = try TestConnection(port: gateway.port).request("GET", "/through")
        #expect(try items(gateway.port).contains { $0["target"] as? String == "/through" })
        let quiet = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:\(backend.port)", "--listen", "127.0.0.1:0", "--no-inspect"])
        defer { quiet.stop() }
        let passed = try ask(quiet.port, "/_inspect")
        #expect(String(decoding: passed.body, as: UTF8.self).contains("\"backend\""))
    }

    @Test func thePageInHeadlessChromium() throws {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let browser = try #require(chromium, "chromium is not installed: `make test` installs it (apt-get install chromium)")
        let python = try pythonWithWebsockets()
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}], "health_check": {"path": null, "interval_ms": 60000},
             "upstreams": {"dead": {"backends": [{"url": "http://127.0.0.1:1"}], "health_check": {"path": null, "interval_ms": 60000}}},
             "routes": [{"path": "/missing-backend", "upstream": "dead"}, {"path": "/", "upstream": "default"}],
             "inspect": {"enabled": true}, "access_log": null}
            """)
        defer { proxy.stop() }
        var output = ""
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/inspector_check.py").path
        let rc = run(python, [script, "--url", "http://127.0.0.1:\(proxy.port)/_inspect", "--proxy", "http://127.0.0.1:\(proxy.port)",
                              "--chromium", browser, "--timeout", "90"], output: &output)
        let line = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        try #require(rc == 0, "inspector check failed: \(output)")
        let seen = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(output)")
        print("inspector check: \(line)")
        let rows = seen["rows"] as? [[String: Any]] ?? []
        #expect(rows.count >= 3)
        #expect(rows.first?["target"] as? String == "/missing-backend", "newest first")
        #expect(seen["filtered_echo"] as? Int == 1)
        #expect(seen["filtered_5xx"] as? Int == 1)
        // Masked in the heads and the curl command (the test backend echoes them in its body, shown as it came).
        #expect(seen["auth_masked"] as? Bool == true && seen["cookie_masked"] as? Bool == true)
        #expect((seen["curl"] as? String)?.contains("secret-token-123") == false)
        #expect(seen["request_body_pretty"] as? Bool == true)
        #expect(seen["response_status"] as? String == "200")
        #expect(seen["curl_ok"] as? Bool == true)
        #expect(seen["replay_status"] as? String == "200", "\(line)")
        #expect(seen["live_row_seen"] as? Bool == true && seen["same_document"] as? Bool == true)
        #expect((seen["page_errors"] as? [Any])?.isEmpty == true, "\(line)")
        #expect((seen["external_requests"] as? [Any])?.isEmpty == true, "\(line)")
    }
}
