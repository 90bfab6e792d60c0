import Foundation
import Glibc
import Testing

/// Route policies over sockets (issue 16, first part): `allow`/`deny` by client address, a
/// route's methods and body limit over the top-level `policy`, refusals before any backend is
/// contacted, counted in `/_metrics` — and no way around a protected route through path tricks
/// (`//admin`, `/%61dmin`, `/x/../admin`: routes match the normal form of the path).
@Suite(.serialized) struct PolicyIntegrationTests {
    @Test func policiesRefuseBeforeTheBackendInTheirOrder() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"upstreams": {"app": {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}]}},
             "policy": {"allowed_methods": ["GET", "HEAD"], "max_body_bytes": 1000},
             "routes": [{"path": "/admin", "upstream": "app", "allow": ["10.0.0.0/8"]},
                        {"path": "/blocked", "upstream": "app", "deny": ["127.0.0.0/8"], "allowed_methods": ["POST"]},
                        {"path": "/upload", "upstream": "app", "allowed_methods": ["GET", "POST"], "max_body_bytes": 100},
                        {"path": "/", "upstream": "app"}],
             "health_check": {"path": "/health", "interval_ms": 60000}, "access_log": null}
            """)
        defer { proxy.stop() }
        func send(_ method: String, _ path: String, body: [UInt8] = [], chunked: Bool = false) throws -> HTTPResponse {
            let c = try TestConnection(port: proxy.port)
            if chunked {
                var text = "\(method) \(path) HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                for piece in stride(from: 0, to: body.count, by: 50) {
                    let n = min(50, body.count - piece)
                    text += String(n, radix: 16) + "\r\n" + String(repeating: "a", count: n) + "\r\n"
                }
                try c.send(text + "0\r\n\r\n")
                return try c.readResponse()
            }
            return try c.request(method, path, body: body)
        }
        // allow: 127.0.0.1 is not in 10.0.0.0/8, whatever the spelling of the path.
        for path in ["/admin", "/admin/users", "//admin", "/%61dmin", "/x/../admin", "/./admin/", "/ADMIN/../admin", "/admin;jsessionid=1"] {
            let r = try send("GET", path)
            #expect(r.status == 403, "\(path): \(r.status) \(r.text)")
        }
        // Spellings a backend would read as /admin while the path looks like another: refused.
        for path in ["/admin#x", "/admin#/../x", "/x/..;/admin", "/;/admin", "/x/%2e%2e;/admin", "/.;/admin"] {
            let r = try send("GET", path)
            #expect(r.status == 400, "\(path): \(r.status) \(r.text)")
        }
        #expect(try send("GET", "/;jsessionid=1").status == 200, "URL rewriting's last-segment parameters stay allowed")
        #expect(try send("GET", "/admin").text.contains("does not accept requests from 127.0.0.1"))
        // deny comes first: a method the route refuses still gets 403, not 405.
        #expect(try send("GET", "/blocked").status == 403)
        // The top-level methods and body limit, and a route's own replacing them.
        let put = try send("PUT", "/anything")
        #expect(put.status == 405 && put.header("Allow") == "GET, HEAD", "\(put.status) \(put.headers)")
        #expect(try send("DELETE", "/upload").header("Allow") == "GET, POST, HEAD", "GET brings HEAD, also in Allow")
        #expect(try send("POST", "/upload", body: Array(repeating: 97, count: 100)).status == 200)
        #expect(try send("POST", "/upload", body: Array(repeating: 97, count: 101)).status == 413)
        #expect(try send("POST", "/upload", body: Array(repeating: 97, count: 80), chunked: true).status == 200)
        #expect(try send("POST", "/upload", body: Array(repeating: 97, count: 150), chunked: true).status == 413)
        #expect(try send("GET", "/other").status == 200)
        #expect(try send("HEAD", "/upload").status == 200, "GET brings HEAD")
        let metrics = try get(proxy.port, "/_metrics").text
        #expect(metrics.contains("proxy_policy_refusals_total{reason=\"address\"} 10"), "\(metrics)")
        // The declared length; the chunked body cut off on arrival counts as a 413 rejection.
        #expect(metrics.contains("proxy_policy_refusals_total{reason=\"body_size\"} 1"), "\(metrics)")
        #expect(metrics.contains("proxy_policy_refusals_total{reason=\"method\"} 2"), "\(metrics)")
        for (route, reason, n) in [("/admin", "address", 9), ("/blocked", "address", 1), ("/upload", "body_size", 1),
                                   ("/upload", "method", 1), ("/", "method", 1)] {
            #expect(metrics.contains("proxy_route_policy_refusals_total{route=\"\(route)\",reason=\"\(reason)\"} \(n)"), "\(route) \(reason): \(metrics)")
        }
    }

    @Test func aRoutesBodyLimitRaisesTheTopLevelOneForDeclaredAndChunkedBodies() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}], "upstreams": {"big": {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}]}},
             "limits": {"max_body_bytes": 100},
             "policy": {"allowed_methods": ["GET"]},
             "routes": [{"path": "/big", "upstream": "big", "max_body_bytes": 0, "allowed_methods": []}],
             "health_check": {"path": "/health", "interval_ms": 60000}, "access_log": null}
            """)
        defer { proxy.stop() }
        let body = Array(repeating: UInt8(97), count: 5000)
        #expect(try TestConnection(port: proxy.port).request("POST", "/big/x", body: body).status == 200, "0 lifts the limit, [] any method")
        #expect(try TestConnection(port: proxy.port).request("PUT", "/big/x", body: body).status == 200)
        let small = try TestConnection(port: proxy.port).request("POST", "/elsewhere", body: body)
        #expect(small.status == 405, "the top-level policy's methods")
        #expect(try TestConnection(port: proxy.port).request("GET", "/elsewhere", body: body).status == 413, "limits.max_body_bytes where no policy sets one")
    }

    @Test func headerRulesAndSecurityHeadersOnBothProtocols() throws {
        let backend = try startBackend()
        let framing = fixedReplyOrigin("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Frame-Options: DENY\r\nConnection: close\r\n\r\nok")
        defer { backend.stop(); framing.stop() }
        let proxy = try startProxy(config: """
            {"upstreams": {"app": {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}]},
                           "framed": {"backends": [{"url": "http://127.0.0.1:\(framing.port)"}]}},
             "policy": {"security_headers": true},
             "routes": [{"path": "/app", "upstream": "app", "strip_prefix": true,
                         "request_headers": {"set": {"X-Env": "prod", "X-Client": "{client_ip}", "X-Trace": "{request_id}@{host}"},
                                             "remove": ["X-Debug"]},
                         "response_headers": {"set": {"Cache-Control": "no-store"}, "remove": ["X-Field-1", "Content-Type"]}},
                        {"path": "/framed", "upstream": "framed"},
                        {"path": "/strict", "upstream": "app", "strip_prefix": true,
                         "response_headers": {"set": {"Referrer-Policy": "no-referrer"}, "remove": ["X-Frame-Options"]}},
                        {"path": "/plain", "upstream": "app", "security_headers": false}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """)
        defer { proxy.stop() }
        let r = try TestConnection(port: proxy.port).request("GET", "/app/echo",
            headers: ["X-Debug": "1", "x-env": "dev", "X-Request-Id": "req-7"])
        #expect(r.status == 200)
        let seen = r.json["headers"] as? [String: String] ?? [:]
        #expect(seen["x-env"] == "prod", "set replaces the client's: \(seen)")
        #expect(seen["x-client"] == "127.0.0.1" && seen["x-trace"] == "req-7@test.local", "\(seen)")
        #expect(seen["x-debug"] == nil, "\(seen)")
        #expect(r.header("Cache-Control") == "no-store" && r.header("Content-Type") == nil)
        #expect(r.header("X-Content-Type-Options") == "nosniff" && r.header("Referrer-Policy") == "strict-origin-when-cross-origin"
                && r.header("X-Frame-Options") == "SAMEORIGIN", "\(r.headers)")
        #expect(r.header("Strict-Transport-Security") == nil, "HSTS only on TLS")
        let fields = try TestConnection(port: proxy.port).request("GET", "/app/headers?n=3")
        #expect(fields.header("X-Field-0") != nil && fields.header("X-Field-1") == nil && fields.header("X-Field-2") != nil)
        // The backend's own X-Frame-Options wins, and is not doubled.
        let framed = try TestConnection(port: proxy.port).request("GET", "/framed")
        #expect(framed.headers.filter { $0.0.lowercased() == "x-frame-options" }.map(\.1) == ["DENY"], "\(framed.headers)")
        #expect(try TestConnection(port: proxy.port).request("GET", "/plain").header("X-Frame-Options") == nil, "a route turns them off")
        // A rule's value (or removal) stands: security_headers does not add its own beside it.
        let strict = try TestConnection(port: proxy.port).request("GET", "/strict/x")
        #expect(strict.headers.filter { $0.0.lowercased() == "referrer-policy" }.map(\.1) == ["no-referrer"], "\(strict.headers)")
        #expect(strict.header("X-Frame-Options") == nil && strict.header("X-Content-Type-Options") == "nosniff", "\(strict.headers)")
        // HTTP/2 (h2c): the same rules.
        let h2 = HTTP2Tests.shell("curl -sS --max-time 10 --http2-prior-knowledge -D - -o /dev/null 'http://127.0.0.1:\(proxy.port)/app/headers?n=2'")
        #expect(h2.status == 0, "\(h2.output)")
        let lines = h2.output.lowercased()
        #expect(lines.contains("cache-control: no-store") && lines.contains("x-content-type-options: nosniff")
                && lines.contains("x-frame-options: sameorigin") && !lines.contains("x-field-1:") && lines.contains("x-field-0:"), "\(h2.output)")
    }

    @Test func corsPreflightsAreAnsweredAndResponsesCarryTheFields() throws {
        let backend = try startBackend()
        // A backend that sets CORS fields of its own: the route's replace them.
        let own = fixedReplyOrigin("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\nok")
        defer { backend.stop(); own.stop() }
        let cors = #"{"origins": ["https://app.example"], "methods": ["GET", "POST", "PUT"], "headers": ["Authorization", "X-Trace"], "#
            + #""expose_headers": ["X-Total"], "credentials": true, "max_age_s": 600}"#
        let proxy = try startProxy(config: """
            {"upstreams": {"app": {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}]},
                           "own": {"backends": [{"url": "http://127.0.0.1:\(own.port)"}]}},
             "routes": [{"path": "/api", "upstream": "app", "cors": \(cors), "allowed_methods": ["GET"]},
                        {"path": "/own", "upstream": "own", "cors": \(cors)},
                        {"path": "/", "upstream": "app"}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """)
        defer { proxy.stop() }
        func preflight(_ path: String, origin: String = "https://app.example", method: String = "PUT",
                       headers: String? = "authorization, x-trace") throws -> HTTPResponse {
            var h = ["Origin": origin, "Access-Control-Request-Method": method]
            if let headers { h["Access-Control-Request-Headers"] = headers }
            return try TestConnection(port: proxy.port).request("OPTIONS", path, headers: h)
        }
        // Answered by the proxy, before the route's methods (OPTIONS is not among them).
        let ok = try preflight("/api/items")
        #expect(ok.status == 200, "\(ok.status) \(ok.text)")
        #expect(ok.header("Access-Control-Allow-Origin") == "https://app.example")
        #expect(ok.header("Access-Control-Allow-Methods") == "GET, POST, PUT" && ok.header("Access-Control-Allow-Headers") == "Authorization, X-Trace")
        #expect(ok.header("Access-Control-Allow-Credentials") == "true" && ok.header("Access-Control-Max-Age") == "600")
        #expect(ok.header("Vary")?.contains("Origin") == true)
        #expect(try preflight("/api/items", origin: "https://evil.example").status == 403)
        #expect(try preflight("/api/items", origin: "https://app.example.evil").status == 403)
        #expect(try preflight("/api/items", method: "DELETE").status == 403)
        #expect(try preflight("/api/items", headers: "x-other").status == 403)
        #expect(try preflight("/api/items", headers: nil).status == 200)
        #expect(try preflight("/api/items", method: "HEAD").status == 200, "GET, HEAD and POST always pass the method check")
        // An OPTIONS that is not a preflight goes through the route's methods as usual.
        #expect(try TestConnection(port: proxy.port).request("OPTIONS", "/api/items", headers: ["Origin": "https://app.example"]).status == 405)
        // Actual requests: the fields for an allowed origin, Vary always.
        let simple = try TestConnection(port: proxy.port).request("GET", "/api/items", headers: ["Origin": "https://app.example"])
        #expect(simple.status == 200 && simple.header("Access-Control-Allow-Origin") == "https://app.example"
                && simple.header("Access-Control-Allow-Credentials") == "true" && simple.header("Access-Control-Expose-Headers") == "X-Total", "\(simple.headers)")
        #expect(simple.header("Vary") == "Origin")
        let other = try TestConnection(port: proxy.port).request("GET", "/api/items", headers: ["Origin": "https://evil.example"])
        #expect(other.status == 200 && other.header("Access-Control-Allow-Origin") == nil && other.header("Vary") == "Origin")
        let plain = try TestConnection(port: proxy.port).request("GET", "/api/items")
        #expect(plain.header("Access-Control-Allow-Origin") == nil && plain.header("Vary") == "Origin")
        // The backend's own Access-Control-* fields give way to the route's.
        let replaced = try TestConnection(port: proxy.port).request("GET", "/own", headers: ["Origin": "https://app.example"])
        #expect(replaced.headers.filter { $0.0.lowercased() == "access-control-allow-origin" }.map(\.1) == ["https://app.example"], "\(replaced.headers)")
        let metrics = try get(proxy.port, "/_metrics").text
        #expect(metrics.contains("proxy_policy_refusals_total{reason=\"cors\"} 4"), "\(metrics)")
    }

    @Test func trustedProxiesNameTheClientForHeadersPoliciesAndTheLog() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let log = NSTemporaryDirectory() + "proxy-trusted-\(UUID().uuidString).json"
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"],
             "routes": [{"path": "/partners", "upstream": "default", "allow": ["203.0.113.0/24"]},
                        {"path": "/", "upstream": "default", "deny": ["198.51.100.0/24"],
                         "request_headers": {"set": {"X-Client": "{client_ip}"}}}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": {"path": "\(log)", "format": "json", "flush_ms": 10}}
            """)
        defer { proxy.stop() }
        func echo(_ path: String, _ xff: String?) throws -> HTTPResponse {
            try TestConnection(port: proxy.port).request("GET", path, headers: xff.map { ["X-Forwarded-For": $0] } ?? [:])
        }
        // 127.0.0.1 (trusted) says 10.0.0.5 (trusted) said 203.0.113.7: that is the client.
        let r = try echo("/partners/x", "203.0.113.7, 10.0.0.5")
        #expect(r.status == 200, "\(r.status) \(r.text)")
        let seen = r.json["headers"] as? [String: String] ?? [:]
        #expect(seen["x-real-ip"] == "203.0.113.7", "\(seen)")
        #expect(seen["x-forwarded-for"] == "203.0.113.7, 10.0.0.5, 127.0.0.1", "the chain keeps the real peer: \(seen)")
        #expect(seen["forwarded"]?.hasPrefix("for=203.0.113.7") == true, "\(seen)")
        // A client cannot add itself a better address on the left: the rightmost untrusted counts.
        #expect(try echo("/partners/x", "203.0.113.7, 198.51.100.9").status == 403)
        #expect(try echo("/anything", "198.51.100.9").status == 403, "deny uses the client named by the trusted peer")
        // An entry that is not an address ends the walk: the peer stays the client.
        let odd = try echo("/anything", "203.0.113.7, unknown")
        #expect((odd.json["headers"] as? [String: String])?["x-real-ip"] == "127.0.0.1")
        #expect((odd.json["headers"] as? [String: String])?["x-client"] == "127.0.0.1")
        let placeholder = try echo("/anything", "192.0.2.4")
        #expect((placeholder.json["headers"] as? [String: String])?["x-client"] == "192.0.2.4")
        // The access log names the client.
        #expect(eventually {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("\"client\":\"203.0.113.7\"")
        }, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    @Test func aRateLimitAnswers429WithRetryAfterPerKey() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/limited", "upstream": "default", "rate_limit": {"key": "header:X-User", "rate": 5, "per": "10s", "burst": 2}},
                        {"path": "/", "upstream": "default"}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, workers: 1)
        defer { proxy.stop() }
        func ask(_ user: String) throws -> HTTPResponse {
            try TestConnection(port: proxy.port).request("GET", "/limited/x", headers: ["X-User": user])
        }
        // burst 2: three at once, then one every 2 s.
        #expect(try (0..<3).map { _ in try ask("alice").status } == [200, 200, 200])
        let over = try ask("alice")
        #expect(over.status == 429, "\(over.status) \(over.text)")
        #expect(over.header("Retry-After") == "2" && over.header("RateLimit-Policy") == "\"route\";q=5;w=10", "\(over.headers)")
        #expect(over.header("RateLimit") == "\"route\";r=0;t=2")
        #expect(try ask("bob").status == 200, "another key")
        #expect(try get(proxy.port, "/elsewhere").status == 200, "another route")
        #expect(try get(proxy.port, "/_metrics").text.contains("proxy_policy_refusals_total{reason=\"rate_limit\"} 1"))
    }

    @Test func aProxyScopeLimitHoldsAcrossWorkerLoops() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/", "upstream": "default", "rate_limit": {"key": "route", "rate": 1, "per": "1h", "burst": 19, "scope": "proxy"}},
                        {"path": "/w", "upstream": "default", "rate_limit": {"key": "route", "rate": 1, "per": "1h", "burst": 19, "scope": "worker"}}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, workers: 2)
        defer { proxy.stop() }
        // 60 requests on fresh connections (the kernel spreads them over both workers): exactly
        // burst + 1 = 20 are let through; with scope "worker" up to 40 would be.
        var statuses: [Int: Int] = [:]
        for _ in 0..<60 { statuses[try TestConnection(port: proxy.port).request("GET", "/x", headers: ["Connection": "close"]).status, default: 0] += 1 }
        #expect(statuses == [200: 20, 429: 40], "\(statuses)")
        // The control: the same limit per worker lets more through, because the connections did
        // reach both workers (SO_REUSEPORT hashes them; all 60 on one is a 2^-59 chance).
        var perWorker = 0
        for _ in 0..<60 where try TestConnection(port: proxy.port).request("GET", "/w", headers: ["Connection": "close"]).status == 200 { perWorker += 1 }
        #expect(perWorker > 20 && perWorker <= 40, "\(perWorker)")
    }
}

/// `scope: "global"` rate limits against a real Redis.
@Suite(.serialized) struct GlobalRateLimitTests {
    private func config(backend: UInt16, redis: UInt16, onError: String = "allow", lease: Int? = nil, burst: Int = 9) -> String {
        """
        {"backends": [{"url": "http://127.0.0.1:\(backend)"}],
         "routes": [{"path": "/", "upstream": "default", "rate_limit": {"key": "header:X-User", "rate": 1, "per": "1h", "burst": \(burst), "scope": "global"\(lease.map { ", \"lease\": \($0)" } ?? "")}}],
         "redis": {"url": "redis://127.0.0.1:\(redis)/3", "timeout_ms": 200, "on_error": "\(onError)"},
         "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
        """
    }

    private func ask(_ port: UInt16, _ user: String = "alice") throws -> HTTPResponse {
        try TestConnection(port: port).request("GET", "/x", headers: ["X-User": user, "Connection": "close"])
    }

    @Test func twoProxiesShareOneLimitThroughRedis() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let backend = try startBackend()
        defer { backend.stop() }
        // Leases of 5 tokens: each instance (2 workers each) takes its share in batches, and
        // together they let through exactly burst + 1 = 10 when every leased token is used.
        let a = try startProxy(config: config(backend: backend.port, redis: redis.port, lease: 5))
        defer { a.stop() }
        let b = try startProxy(config: config(backend: backend.port, redis: redis.port))
        defer { b.stop() }
        var statuses: [Int: Int] = [:]
        for i in 0..<60 { statuses[try ask(i % 2 == 0 ? a.port : b.port).status, default: 0] += 1 }
        // Never more than the limit; fewer only by tokens a worker leased and was not asked for.
        #expect(statuses[200, default: 0] <= 10 && statuses[200, default: 0] >= 6, "\(statuses)")
        print("global limit across two proxies: \(statuses)")
        #expect(statuses[200, default: 0] + statuses[429, default: 0] == 60, "\(statuses)")
        let refused = try ask(b.port)
        #expect(refused.status == 429 && refused.header("RateLimit-Policy") == "\"route\";q=1;w=3600", "\(refused.status) \(refused.headers)")
        #expect(try ask(a.port, "bob").status == 200, "another key has its own bucket")
        // In the URL's database, under the key prefix and the route's name: one key per user.
        #expect(try redis.command("EVAL", "redis.call('SELECT', 3) return #redis.call('KEYS', 'proxy:rl:/:1/3600000ms/9:*')", "0") == ":2")
        #expect(try redis.command("DBSIZE") == ":0", "nothing in database 0")
    }

    @Test func redisGoingAwayFailsOpenOrClosedAndTheLimitComesBack() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let backend = try startBackend()
        defer { backend.stop() }
        // One worker each: every worker has its own Redis connection and reconnect backoff, so
        // with two a request could reach a worker still waiting to reconnect after the check
        // below saw its sibling reconnected (a fail-closed 503 that is correct, but not the point).
        let open = try startProxy(config: config(backend: backend.port, redis: redis.port, burst: 1), workers: 1)
        defer { open.stop() }
        let closed = try startProxy(config: config(backend: backend.port, redis: redis.port, onError: "deny", burst: 1), workers: 1)
        defer { closed.stop() }
        #expect(try (0..<2).map { _ in try ask(open.port).status } == [200, 200])
        #expect(try ask(open.port).status == 429)
        #expect(try ask(closed.port).status == 429, "the same key, counted in the same Redis")

        redis.stop()
        // Fail open: let through (and counted); fail closed: 503 saying why. (A key a worker was
        // refused for stays refused there until its time, Redis or not: a new key.)
        #expect(try (0..<5).map { _ in try ask(open.port, "zed").status } == [200, 200, 200, 200, 200])
        let denied = try ask(closed.port, "zed")
        #expect(denied.status == 503 && denied.text.contains("rate limit cannot be checked") && !denied.text.contains("127.0.0.1"),
                "\(denied.status) \(denied.text)")
        #expect(eventually(2) { closed.log.contains("redis: ") }, "the reason is logged: \(closed.log)")
        let metrics = try get(open.port, "/_metrics").text
        #expect(metrics.contains("proxy_rate_limit_store_errors_total 5"), "\(metrics.split(separator: "\n").filter { $0.contains("store_errors") })")

        // Redis comes back (empty): the proxies reconnect (backoff ≤ 5 s) and limit again.
        try redis.start()
        #expect(try eventually(12) { try ask(open.port, "carol").status == 200 && ask(closed.port, "dave").status == 200 })
        #expect(try ask(open.port, "erin").status == 200)
        #expect(try ask(open.port, "erin").status == 200)
        #expect(try ask(closed.port, "erin").status == 429, "limited again, across both")
    }

    @Test func aServerAnnouncingAHugeReplyIsDroppedNotBelieved() throws {
        // Not Redis: it answers every command with an array of 2^31 elements, then nothing.
        let (fd, port) = listenOnLoopback()
        defer { close(fd) }
        acceptEachOnItsOwnThread(fd) { c in
            var chunk = [UInt8](repeating: 0, count: 4096)
            while retryingOnEINTR({ chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) } }) > 0 {
                let answer = Array("*2147483647\r\n$99999999999\r\n".utf8)
                _ = answer.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            close(c)
        }
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: config(backend: backend.port, redis: port), workers: 1)
        defer { proxy.stop() }
        let started = Date()
        for user in ["a", "b", "c"] { #expect(try ask(proxy.port, user).status == 200, "fails open") }
        #expect(Date().timeIntervalSince(started) < 2, "\(Date().timeIntervalSince(started)) s")
        #expect(proxy.rssKiB < 200_000 * sanitizerMemoryFactor, "\(proxy.rssKiB) KiB")
        #expect(eventually(2) { proxy.log.contains("redis: ") }, "\(proxy.log)")
    }

    @Test func aSlowRedisTimesOutAndTheRequestGoesOn() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: config(backend: backend.port, redis: redis.port), workers: 1)
        defer { proxy.stop() }
        #expect(try ask(proxy.port).status == 200)
        // DEBUG SLEEP blocks the server for 1.5 s; the proxy's timeout is 200 ms.
        let sleeper = Thread { _ = try? redis.command("DEBUG", "SLEEP", "1.5") }
        sleeper.start()
        usleep(100_000)
        let started = Date()
        // A new key: no lease held, so it must ask Redis.
        let slow = try ask(proxy.port, "frank")
        let took = Date().timeIntervalSince(started)
        #expect(slow.status == 200 && took < 1.2, "\(slow.status) after \(took) s")
        let metrics = try get(proxy.port, "/_metrics").text
        #expect(metrics.contains("proxy_rate_limit_store_errors_total 1"), "\(metrics.split(separator: "\n").filter { $0.contains("store_errors") })")
    }
}

/// `proxy_protocol` listeners and `send_proxy_protocol` upstreams.
@Suite struct ProxyProtocolIntegrationTests {
    private func freePort() -> UInt16 {
        let (fd, port) = listenOnLoopback()
        close(fd)
        return port
    }

    @Test func aListenerTakesTheClientFromThePROXYHeaderAndRefusesConnectionsWithout() throws {
        let backend = try startBackend()
        defer { backend.stop() }
        let port = freePort()
        let config = writeTempFile("""
            {"listen": [{"address": "127.0.0.1:\(port)", "proxy_protocol": true}],
             "backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/private", "upstream": "default", "deny": ["203.0.113.0/24"]}, {"path": "/", "upstream": "default"}],
             "timeouts": {"client_header_ms": 500}, "admin": {"listen": "127.0.0.1:0"},
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, suffix: ".json")
        let proxy = try ManagedProcess("proxy", ["--config", config, "--workers", "2"])
        defer { proxy.stop() }

        // v1 and the request in one write: the client is the header's source.
        let one = try TestConnection(port: port)
        try one.send("PROXY TCP4 203.0.113.9 127.0.0.1 51000 \(port)\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        let echoed = try one.readResponse()
        #expect(echoed.status == 200)
        let headers = echoed.json["headers"] as? [String: Any]
        #expect(headers?["x-real-ip"] as? String == "203.0.113.9" && headers?["x-forwarded-for"] as? String == "203.0.113.9", "\(echoed.text)")
        // The same connection keeps that client; allow/deny see it.
        #expect(try one.request("GET", "/private").status == 403)

        // v2 in pieces, then the request on its own.
        let two = try TestConnection(port: port)
        let header = ProxyProtocolBytes.signature + [0x21, 0x11, 0x00, 0x0C, 198, 51, 100, 7, 127, 0, 0, 1, 0x9C, 0x40, UInt8(port >> 8), UInt8(port & 0xFF)]
        try two.send(Array(header.prefix(10)))
        usleep(50_000)
        try two.send(Array(header.dropFirst(10)))
        let second = try two.request("GET", "/private/echo")
        #expect(second.status == 200 && (second.json["headers"] as? [String: Any])?["x-real-ip"] as? String == "198.51.100.7", "\(second.text)")

        // No header: closed without an answer; likewise a header that never completes.
        let plain = try TestConnection(port: port)
        try plain.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(plain.readToEnd().isEmpty)
        let stalled = try TestConnection(port: port)
        try stalled.send("PROXY TCP4 1.2.3.4")
        let started = Date()
        #expect(stalled.readToEnd().isEmpty && Date().timeIntervalSince(started) < 3, "closed after client_header_ms")
        // A header claiming 127.0.0.1 does not open the loopback-only paths (metrics, the API).
        let claimed = try TestConnection(port: port)
        try claimed.send("PROXY TCP4 127.0.0.1 127.0.0.1 40000 \(port)\r\n")
        #expect(!(try claimed.request("GET", "/_metrics").text.contains("# HELP")))
        #expect(eventually(5) { (try? adminMetrics(proxy))?.contains("proxy_proxy_protocol_refusals_total 2") == true })
    }

    @Test func anUpstreamWithSendProxyProtocolStartsEachConnectionWithTheHeader() throws {
        // A backend that records the first bytes of each connection and answers one request.
        let (fd, backendPort) = listenOnLoopback()
        defer { close(fd) }
        let seen = FirstBytes()
        acceptEachOnItsOwnThread(fd) { c in
            var got: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            // (A v2 header itself holds CRLF CRLF: wait for the request's own end.)
            while !{ let t = String(decoding: got, as: UTF8.self); return t.contains("GET ") && t.hasSuffix("\r\n\r\n") }() {
                let n = retryingOnEINTR { chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) } }
                if n <= 0 { break }
                got += chunk[0..<n]
            }
            seen.add(got)
            let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
            _ = answer.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            usleep(200_000)
            close(c)
        }
        for version in ["v1", "v2"] {
            seen.clear()
            let proxy = try startProxy(config: """
                {"backends": [{"url": "http://127.0.0.1:\(backendPort)"}], "send_proxy_protocol": "\(version)",
                 "health_check": {"path": "/health", "interval_ms": 60000}, "access_log": null}
                """)
            defer { proxy.stop() }
            let client = try TestConnection(port: proxy.port)
            #expect(try client.request("GET", "/a").status == 200)
            #expect(try client.request("GET", "/b").status == 200)
            let firsts = seen.all.map { (bytes: $0, text: String(decoding: $0, as: UTF8.self)) }
            let requests = firsts.filter { $0.text.contains("GET /a ") || $0.text.contains("GET /b ") }
            #expect(requests.count == 2, "a connection per request (one speaks for one client): \(firsts.map(\.text))")
            for (bytes, text) in requests {
                if version == "v1" {
                    #expect(text.hasPrefix("PROXY TCP4 127.0.0.1 127.0.0.1 ") && text.contains(" \(proxy.port)\r\nGET /"), "\(text)")
                } else {
                    #expect(bytes.starts(with: ProxyProtocolBytes.signature + [0x21, 0x11, 0x00, 0x0C, 127, 0, 0, 1, 127, 0, 0, 1]), "\(bytes.prefix(28))")
                    #expect(bytes.count > 28 && bytes[26] == UInt8(proxy.port >> 8) && bytes[27] == UInt8(proxy.port & 0xFF))
                    #expect(String(decoding: bytes.dropFirst(28), as: UTF8.self).hasPrefix("GET /"))
                }
            }
            // The health check speaks for itself: PROXY UNKNOWN / LOCAL.
            // (The first probe goes out at start, but may land after the requests on a busy machine.)
            #expect(eventually(10) { seen.all.contains { String(decoding: $0, as: UTF8.self).contains("GET /health ") } })
            let probes = seen.all.map { (bytes: $0, text: String(decoding: $0, as: UTF8.self)) }.filter { $0.text.contains("GET /health ") }
            #expect(!probes.isEmpty && probes.allSatisfy {
                version == "v1" ? $0.text.hasPrefix("PROXY UNKNOWN\r\nGET /health ") : $0.bytes.starts(with: ProxyProtocolBytes.signature + [0x20, 0x00, 0x00, 0x00, 0x47])
            }, "\(probes.map(\.text))")
        }
    }
}

/// `/_metrics` of a proxy whose only listener takes PROXY headers, through the admin listener
/// the test's config adds (`admin.listen`).
func adminMetrics(_ proxy: ManagedProcess) throws -> String {
    guard let line = proxy.log.split(separator: "\n").first(where: { $0.contains("; admin on ") }),
          let portText = line.split(separator: ":").last.map({ $0.prefix { $0.isNumber } }), let port = UInt16(portText) else {
        throw HarnessError("no admin listener in the log: \(proxy.log)")
    }
    return try get(port, "/_metrics").text
}

/// What a test origin read first on each connection.
final class FirstBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [[UInt8]] = []
    func add(_ b: [UInt8]) { lock.lock(); items.append(b); lock.unlock() }
    func clear() { lock.lock(); items.removeAll(); lock.unlock() }
    var all: [[UInt8]] { lock.lock(); defer { lock.unlock() }; return items }
}

enum ProxyProtocolBytes {
    /// The 12 bytes a PROXY protocol v2 header starts with.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
}

/// `auth.basic` with htpasswd files made by Debian's `htpasswd` (apache2-utils).
@Suite struct BasicAuthTests {
    /// `htpasswd OPTIONS FILE USER PASSWORD`.
    private func htpasswd(_ path: String, _ options: [String], _ user: String, _ password: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/htpasswd")
        p.arguments = options + [path, user, password]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
    }

    private func basic(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    @Test func basicAuthGuardsARouteWithoutBlockingTheLoop() throws {
        let dir = NSTemporaryDirectory() + "auth-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = dir + "/users.htpasswd"
        // bcrypt at cost 12 (~0.2 s a check), SHA-512 crypt, and SHA-256 crypt.
        try htpasswd(file, ["-c", "-b", "-B", "-C", "12"], "alice", "s3cret")
        try htpasswd(file, ["-b", "-5"], "bob", "hunter2")
        try htpasswd(file, ["-b", "-2"], "carol", "pa:ss")
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/admin", "upstream": "default", "auth": {"basic": {"htpasswd": "\(file)", "realm": "ops"}}},
                        {"path": "/admin/public", "upstream": "default", "auth": false},
                        {"path": "/pass", "upstream": "default", "auth": {"basic": {"htpasswd": "\(file)"}, "forward_credentials": true}},
                        {"path": "/", "upstream": "default"}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, workers: 1)
        defer { proxy.stop() }
        let port = proxy.port
        @Sendable func ask(_ path: String, _ authorization: String?) throws -> HTTPResponse {
            try TestConnection(port: port).request("GET", path, headers: authorization.map { ["Authorization": $0] } ?? [:])
        }
        let none = try ask("/admin/echo", nil)
        #expect(none.status == 401 && none.header("WWW-Authenticate") == "Basic realm=\"ops\", charset=\"UTF-8\"", "\(none.status) \(none.headers)")
        #expect(try ask("/admin/echo", basic("alice", "wrong")).status == 401)
        #expect(try ask("/admin/echo", basic("mallory", "s3cret")).status == 401, "unknown user")
        #expect(try ask("/admin/echo", "Bearer abc").status == 401)
        #expect(try ask("/admin/echo", "Basic !!!").status == 401)
        for (user, password) in [("alice", "s3cret"), ("bob", "hunter2"), ("carol", "pa:ss")] {
            let ok = try ask("/admin/echo", basic(user, password))
            #expect(ok.status == 200, "\(user): \(ok.status) \(ok.text)")
            #expect((ok.json["headers"] as? [String: Any])?["authorization"] == nil, "the credentials stop at the proxy")
        }
        let twice = try TestConnection(port: proxy.port)
        try twice.send("GET /pass/echo HTTP/1.1\r\nHost: x\r\nAuthorization: \(basic("bob", "hunter2"))\r\nAuthorization: \(basic("mallory", "x"))\r\n\r\n")
        #expect(try twice.readResponse().status == 400, "two credentials: refused")
        let forwarded = try ask("/pass/echo", basic("bob", "hunter2"))
        #expect((forwarded.json["headers"] as? [String: Any])?["authorization"] as? String == basic("bob", "hunter2"))
        #expect(try ask("/admin/public/echo", nil).status == 200, "auth: false lifts it")
        // Spellings of the path meet the same route.
        for path in ["//admin/echo", "/%61dmin/echo", "/x/../admin/echo", "/admin;x=1/echo"] {
            #expect(try ask(path, nil).status == 401, "\(path)")
        }
        // A bcrypt check at cost 12 takes a while on the thread pool; the loop keeps answering.
        let wrong = basic("alice", "not-it"), right = basic("alice", "s3cret")
        let slowStatus = FirstBytes()
        let slow = Thread { slowStatus.add([UInt8(((try? ask("/admin/echo", wrong).status) ?? 0) % 256)]) }
        slow.start()
        usleep(20_000)
        let started = Date()
        #expect(try get(proxy.port, "/elsewhere").status == 200)
        #expect(Date().timeIntervalSince(started) < 0.15, "\(Date().timeIntervalSince(started)) s while a check runs")
        // Cached: many concurrent requests with a good credential all pass.
        let results = FirstBytes()
        let threads = (0..<16).map { _ in Thread { results.add([UInt8((try? ask("/admin/echo", right).status == 200) == true ? 1 : 0)]) } }
        threads.forEach { $0.start() }
        #expect(eventually(10) { results.all.count == 16 })
        #expect(results.all.allSatisfy { $0 == [1] })
        #expect(eventually(10) { slowStatus.all == [[UInt8(401 % 256)]] }, "\(slowStatus.all)")
        #expect(try get(proxy.port, "/_metrics").text.contains("proxy_policy_refusals_total{reason=\"auth\"} 10"))
    }

    @Test func htpasswdFilesWithHashesThatCannotBeCheckedAreConfigErrors() throws {
        let file = NSTemporaryDirectory() + "md5-\(UUID().uuidString).htpasswd"
        try htpasswd(file, ["-c", "-b", "-m"], "dave", "pw")
        let proxy = try? startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:1"}], "policy": {"auth": {"basic": {"htpasswd": "\(file)"}}}}
            """)
        #expect(proxy == nil)
        let config = writeTempFile(#"{"backends": [{"url": "http://127.0.0.1:1"}], "policy": {"auth": {"basic": {"htpasswd": "\#(file)"}}}}"#, suffix: ".json")
        var text = ""
        let checkStatus = run(productsDirectory.appendingPathComponent("proxy").path, ["--config", config, "--check"], output: &text)
        #expect(checkStatus != 0 && text.contains("policy.auth.basic.htpasswd") && text.contains("MD5") && text.contains("htpasswd -B"), "\(text)")
        // A good file: --check says what each route's policy is.
        let good = NSTemporaryDirectory() + "good-\(UUID().uuidString).htpasswd"
        try htpasswd(good, ["-c", "-b", "-B", "-C", "5"], "erin", "pw")
        let goodConfig = writeTempFile(#"{"listen": [{"address": "127.0.0.1:0", "proxy_protocol": true}], "backends": [{"url": "http://127.0.0.1:1"}], "routes": [{"path": "/admin", "upstream": "default", "auth": {"basic": {"htpasswd": "\#(good)", "realm": "ops"}}, "rate_limit": {"rate": 5, "per": "1m", "scope": "proxy"}}]}"#, suffix: ".json")
        var output = ""
        #expect(run(productsDirectory.appendingPathComponent("proxy").path, ["--config", goodConfig, "--check"], output: &output) == 0)
        #expect(output.contains("policy /admin: auth basic (1 users from \(good), realm \"ops\"); rate_limit 5 per 60000 ms, burst 0, per client_ip, scope proxy"), "\(output)")
        #expect(output.contains("(PROXY protocol header first, v1 or v2)"), "\(output)")
    }
}

/// `auth.jwt` with keys and tokens made by PyJWT + cryptography (`Python/make_jwts.py`).
@Suite struct JWTAuthTests {
    @Test func tokensAreCheckedAndTheirClaimsForwardedAndCounted() throws {
        let python = try testPython(["jwt": "PyJWT", "cryptography": "cryptography"])
        let dir = NSTemporaryDirectory() + "jwt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var output = ""
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/make_jwts.py").path
        #expect(run(python, [script, dir], output: &output) == 0, "\(output)")
        let tokens = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: String], "\(output)")
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/api", "upstream": "default",
                         "auth": {"jwt": {"jwks": "\(dir)/jwks.json", "issuer": "https://id.example", "audience": "api",
                                          "forward_claims": {"sub": "X-User-Id", "tenant": "X-Tenant"}}},
                         "rate_limit": {"key": "jwt:sub", "rate": 1, "per": "1h", "burst": 2}},
                        {"path": "/hs", "upstream": "default", "auth": {"jwt": {"secret_file": "\(dir)/hs256.key"}}},
                        {"path": "/", "upstream": "default"}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, workers: 1)
        defer { proxy.stop() }
        func ask(_ path: String, _ token: String?, headers: [String: String] = [:]) throws -> HTTPResponse {
            try TestConnection(port: proxy.port).request("GET", path, headers: headers.merging(token.map { ["Authorization": "Bearer " + $0] } ?? [:]) { a, _ in a })
        }
        let none = try ask("/api/echo", nil)
        #expect(none.status == 401 && none.header("WWW-Authenticate") == "Bearer", "\(none.status) \(none.headers)")
        for bad in ["expired", "not_yet", "wrong_aud", "wrong_iss", "wrong_key", "unknown_kid", "alg_none", "tampered", "confusion"] {
            let refused = try ask("/api/echo", tokens[bad]!)
            #expect(refused.status == 401 && refused.header("WWW-Authenticate") == "Bearer error=\"invalid_token\"", "\(bad): \(refused.status) \(refused.text)")
        }
        #expect(try ask("/api/echo", "not.a.jwt").status == 401)
        #expect(try ask("/api/echo", tokens["hs256"]!).status == 401, "no HS256 secret on this route")
        #expect(try ask("/hs/echo", tokens["es256"]!).status == 401, "and no public keys on that one")
        #expect(try ask("/hs/echo", tokens["hs256"]!).status == 200)
        // Each signing algorithm, the client's own X-User-Id dropped, the claims forwarded.
        let ok = try ask("/api/echo", tokens["es256"]!, headers: ["X-User-Id": "forged", "X-Tenant": "forged", "X_User_Id": "forged"])
        let seen = ok.json["headers"] as? [String: Any]
        #expect(ok.status == 200 && seen?["x-user-id"] as? String == "user-42" && seen?["x-tenant"] as? String == "acme", "\(ok.text)")
        #expect(seen?["x_user_id"] == nil, "the underscore spelling of a claim field is dropped too: \(ok.text)")
        #expect(seen?["authorization"] == nil)
        // The rate limit counts by sub: user-42 has 3 (burst 2), the cached token and fresh ones alike.
        #expect(try ask("/api/echo", tokens["rs256"]!).status == 200)
        #expect(try ask("/api/echo", tokens["eddsa"]!).status == 200, "burst 2: three at once")
        let over = try ask("/api/echo", tokens["aud_list"]!)
        #expect(over.status == 429 && over.header("Retry-After") != nil, "the fourth user-42 request: \(over.status)")
        #expect(try ask("/api/echo", tokens["other_user"]!).status == 200, "another sub, another bucket")
        // A signed token with an absurd exp (1e300) is checked like any other (over the limit
        // here, as user-42) and the proxy stays up.
        #expect(try ask("/api/x/echo", tokens["huge_exp"]!).status == 429)
        #expect(try get(proxy.port, "/elsewhere").status == 200, "still up")
        // A claim with CR LF cannot break the request head.
        let injected = try ask("/api/x/echo", tokens["header_injection"]!)
        #expect(injected.status == 200 || injected.status == 429)
        if injected.status == 200 {
            let h = injected.json["headers"] as? [String: Any]
            #expect(h?["x-admin"] == nil && (h?["x-user-id"] as? String)?.contains("%0D%0A") == true, "\(injected.text)")
        }
        #expect(try get(proxy.port, "/_metrics").text.contains("proxy_policy_refusals_total{reason=\"auth\"}"))
    }

    @Test func keysFromAnHTTPSURLAreFetchedRefetchedForANewKidAndKeptWhenTheServerGoes() throws {
        let python = try testPython(["jwt": "PyJWT", "cryptography": "cryptography"])
        let dir = NSTemporaryDirectory() + "jwks-url-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var output = ""
        #expect(run(python, [packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/make_jwts.py").path, dir], output: &output) == 0, "\(output)")
        let tokens = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: String], "\(output)")
        let served = dir + "/served.json"
        try FileManager.default.copyItem(atPath: dir + "/jwks.json", toPath: served)
        let certs = try TestCertificates()
        defer { certs.remove() }
        let leaf = try certs.leaf("jwks", names: ["localhost", "127.0.0.1"])
        let server = try ManagedProcess("/usr/bin/python3", [packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/jwks_server.py").path,
                                                             leaf.cert, leaf.key, served], absolute: true)
        defer { server.stop() }
        func fetches(_ path: String) -> Int { server.log.split(separator: "\n").filter { $0.hasPrefix("jwks_server: fetch ") && $0.hasSuffix(" " + path) }.count }
        let backend = try startBackend()
        defer { backend.stop() }
        let claims = #""issuer": "https://id.example", "audience": "api", "forward_claims": {"sub": "X-User-Id"}"#
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/api", "upstream": "default", "auth": {"jwt": {"jwks": {"url": "https://localhost:\(server.port)/jwks.json",
                           "ca": "\(certs.caFile)", "min_refetch_s": 2, "refresh_s": 3600}, \(claims)}}},
                        {"path": "/chunked", "upstream": "default", "auth": {"jwt": {"jwks": {"url": "https://127.0.0.1:\(server.port)/chunked/jwks.json",
                           "ca": "\(certs.caFile)", "refresh_s": 1}, \(claims)}}},
                        {"path": "/untrusted", "upstream": "default", "auth": {"jwt": {"jwks": {"url": "https://localhost:\(server.port)/jwks.json", "timeout_ms": 2000}}}},
                        {"path": "/", "upstream": "default"}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, workers: 2)
        defer { proxy.stop() }
        func ask(_ path: String, _ token: String) throws -> HTTPResponse {
            try TestConnection(port: proxy.port).request("GET", path, headers: ["Authorization": "Bearer " + token])
        }
        // At start each URL is fetched once; requests that come first wait for it.
        let first = try ask("/api/echo", tokens["es256"]!)
        #expect(first.status == 200 && (first.json["headers"] as? [String: Any])?["x-user-id"] as? String == "user-42", "\(first.status) \(first.text) \(proxy.log) \(server.log)")
        #expect(try ask("/chunked/echo", tokens["rs256"]!).status == 200, "a chunked answer is read too")
        #expect(fetches("/jwks.json") == 1, "\(server.log)")
        // A server the system's CAs do not vouch for: no keys, so 503 (not 401); the log says
        // why, the client is not told the URL or the TLS detail.
        let untrusted = try ask("/untrusted/echo", tokens["es256"]!)
        #expect(untrusted.status == 503 && untrusted.text.contains("could not be fetched yet") && !untrusted.text.contains("localhost")
                && untrusted.header("Retry-After") != nil, "\(untrusted.status) \(untrusted.text)")
        #expect(eventually(3) { proxy.log.contains("jwks: https://localhost:\(server.port)/jwks.json: TLS:") && proxy.log.contains("certificate") },
                "\(proxy.log)")

        // A kid the keys lack, min_refetch_s after the start fetch: one fetch (the request waits
        // for it); the server still lacks the key: 401. Right after: refused at once, no fetch.
        Thread.sleep(forTimeInterval: 2.2)
        #expect(try ask("/api/echo", tokens["rotated"]!).status == 401)
        #expect(fetches("/jwks.json") == 2, "\(server.log)")
        #expect(try ask("/api/echo", tokens["rotated"]!).status == 401)
        #expect(try ask("/api/echo", tokens["unknown_kid"]!).status == 401)
        #expect(fetches("/jwks.json") == 2, "at most one fetch per min_refetch_s: \(server.log)")
        // The provider rotates; the next token with the new kid fetches it and passes.
        try FileManager.default.removeItem(atPath: served)
        try FileManager.default.copyItem(atPath: dir + "/jwks_rotated.json", toPath: served)
        Thread.sleep(forTimeInterval: 2.2)
        let rotated = try ask("/api/echo", tokens["rotated"]!)
        #expect(rotated.status == 200 && (rotated.json["headers"] as? [String: Any])?["x-user-id"] as? String == "user-rotated", "\(rotated.status) \(rotated.text)")
        #expect(fetches("/jwks.json") == 3, "\(server.log)")
        #expect(proxy.log.contains(#"4 keys ("ec1", "rsa1", "ed1", "ec2")"#), "the new keys are logged: \(proxy.log)")
        // refresh_s: 1 — the chunked URL is fetched again in the background.
        #expect(fetches("/chunked/jwks.json") >= 3, "\(server.log)")

        // A reload that keeps the URL keeps its keys: no fetch, the new kid still passes.
        proxy.signal(SIGHUP)
        #expect(eventually(5) { proxy.log.contains("reload: ") }, "\(proxy.log)")
        #expect(try ask("/api/echo", tokens["rotated"]!).status == 200)
        #expect(fetches("/jwks.json") == 3, "\(server.log)")

        // The server goes away: the keys fetched stay in use, for cached and new tokens alike.
        server.stop()
        #expect(try ask("/api/echo", tokens["rotated"]!).status == 200)
        #expect(try ask("/api/echo", tokens["other_user"]!).status == 200)
        #expect(try ask("/api/echo", tokens["wrong_key"]!).status == 401)
        #expect(try ask("/chunked/echo", tokens["eddsa"]!).status == 200)
        #expect(try get(proxy.port, "/elsewhere").status == 200)
    }

    @Test func aShutdownAnswersRequestsWaitingForASlowJWKSAtOnce() throws {
        let python = try testPython(["jwt": "PyJWT", "cryptography": "cryptography"])
        let dir = NSTemporaryDirectory() + "jwks-slow-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var output = ""
        #expect(run(python, [packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/make_jwts.py").path, dir], output: &output) == 0, "\(output)")
        let tokens = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: String], "\(output)")
        let certs = try TestCertificates()
        defer { certs.remove() }
        let leaf = try certs.leaf("jwks", names: ["127.0.0.1"])
        let server = try ManagedProcess("/usr/bin/python3", [packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/jwks_server.py").path,
                                                             leaf.cert, leaf.key, dir + "/jwks.json"], absolute: true)
        defer { server.stop() }
        let backend = try startBackend()
        defer { backend.stop() }
        // The server takes 10 s to answer; the fetch may take 9.
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/", "upstream": "default", "auth": {"jwt": {"jwks": {"url": "https://127.0.0.1:\(server.port)/slow/jwks.json",
                           "ca": "\(certs.caFile)", "timeout_ms": 9000}}}}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """, workers: 1)
        defer { proxy.stop() }
        final class Answer: @unchecked Sendable {
            private let lock = NSLock()
            private var _status: Int?
            var status: Int? { lock.lock(); defer { lock.unlock() }; return _status }
            func set(_ s: Int) { lock.lock(); _status = s; lock.unlock() }
        }
        let answered = Answer()
        let port = proxy.port, token = tokens["es256"]!
        let client = Thread {
            let r = try? TestConnection(port: port).request("GET", "/echo", headers: ["Authorization": "Bearer " + token])
            answered.set(r?.status ?? -1)
        }
        client.start()
        Thread.sleep(forTimeInterval: 1)
        #expect(answered.status == nil, "still waiting for the keys")
        let stopped = Date()
        proxy.signal(SIGTERM)
        #expect(eventually(4) { answered.status != nil }, "the waiting request is answered at once")
        #expect(answered.status == 503)
        #expect(eventually(4) { !proxy.process.isRunning }, "and the proxy exits without waiting for the fetch")
        #expect(Date().timeIntervalSince(stopped) < 5)
    }

    @Test func jwtConfigMistakesAreNamed() throws {
        let dir = NSTemporaryDirectory() + "jwt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/empty.json"))
        try Data("short\n".utf8).write(to: URL(fileURLWithPath: dir + "/short.key"))
        // A 1024-bit RSA key (n of 128 bytes): the library refuses it, so the config does.
        let n = Data(repeating: 0xC5, count: 128).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        try Data(#"{"keys": [{"kty": "RSA", "kid": "weak", "n": "\#(n)", "e": "AQAB"}]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/weak.json"))
        for (auth, expected) in [
            (#"{"jwt": {"jwks": "\#(dir)/empty.json"}}"#, "holds no key this proxy can check"),
            (#"{"jwt": {"jwks": "http://id.example/jwks"}}"#, "use https://"),
            (#"{"jwt": {"secret_file": "\#(dir)/short.key"}}"#, "an HS256 secret needs 32 to 4096"),
            (#"{"jwt": {"secret_file": "\#(dir)/nope.key"}}"#, "cannot read"),
            (#"{"jwt": {"issuer": "x"}}"#, "policy.auth.jwt.jwks: missing; a JWKS file or https:// URL"),
            (#"{"jwt": {"jwks": "\#(dir)/weak.json"}}"#, "is not a valid public key (RSA needs 2048"),
        ] {
            let config = writeTempFile(#"{"backends": [{"url": "http://127.0.0.1:1"}], "policy": {"auth": \#(auth)}}"#, suffix: ".json")
            var output = ""
            #expect(run(productsDirectory.appendingPathComponent("proxy").path, ["--config", config, "--check"], output: &output) != 0)
            #expect(output.contains(expected), "\(auth): \(output)")
        }
    }
}

/// CORS as a browser sees it: headless Chromium on a page of another origin (`Python/cors_check.py`).
@Suite struct CORSBrowserTests {
    @Test(.timeLimit(.minutes(2)))
    func preflightsAndCredentialedRequestsFromAnotherOriginInChromium() throws {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let browser = try #require(chromium, "chromium is not installed: `make test` installs it (apt-get install chromium)")
        let python = try pythonWithWebsockets()
        let (fd, pagePort) = listenOnLoopback()
        close(fd)
        let backend = try startBackend()
        defer { backend.stop() }
        let page = "http://127.0.0.1:\(pagePort)"
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/api", "upstream": "default",
                         "cors": {"origins": ["\(page)"], "methods": ["GET", "PUT"], "headers": ["Content-Type", "X-Trace"],
                                  "expose_headers": ["X-Total"], "credentials": true, "max_age_s": 0},
                         "response_headers": {"set": {"X-Total": "7"}}},
                        {"path": "/anon", "upstream": "default", "cors": {"origins": ["\(page)"]}},
                        {"path": "/", "upstream": "default"}],
             "health_check": {"path": null, "interval_ms": 60000}, "access_log": null}
            """)
        defer { proxy.stop() }
        var output = ""
        let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/cors_check.py").path
        let rc = run(python, [script, "--page-port", String(pagePort), "--target", "http://localhost:\(proxy.port)",
                              "--chromium", browser, "--timeout", "60"], output: &output)
        let jsonLine = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        try #require(rc == 0, "cors check failed: \(output)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(jsonLine.utf8)) as? [String: Any], "\(output)")
        let r = try #require(result["results"] as? [String: [String: Any]], "\(result)")
        print("cors check: \(jsonLine)")
        // Allowed: preflighted, credentialed, the request header through, the exposed field readable.
        #expect(r["put"]?["status"] as? Int == 200 && r["put"]?["trace"] as? String == "t1" && r["put"]?["exposed"] as? String == "7", "\(r)")
        #expect(r["put"]?["hidden"] is NSNull, "fields not exposed stay hidden: \(r)")
        #expect(r["get"]?["status"] as? Int == 200, "\(r)")
        // Refused by the browser because the proxy's answers said no.
        for name in ["del", "bad_header", "no_cors", "creds_refused"] {
            #expect((r[name]?["error"] as? String)?.contains("TypeError") == true, "\(name): \(r[name] ?? [:])")
        }
        #expect(r["anon"]?["status"] as? Int == 200, "\(r)")
        let preflights = result["preflights"] as? [String] ?? []
        #expect(preflights.filter { $0.hasSuffix("/api/echo") }.count >= 2, "PUT and DELETE were preflighted: \(preflights)")
        #expect((result["page_errors"] as? [Any])?.isEmpty != false, "\(result)")
    }
}
