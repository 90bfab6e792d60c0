import Foundation
import Glibc
import Testing

/// Routing decides on what the backend will resolve, not on raw bytes (issue 12 §1.4, §1.5, §1.15):
/// normalised paths, the authority of an absolute-form target, and only well-formed `Host` values.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RoutingTests {
    /// Sends `head` (request line and fields, without the blank line) on a fresh connection.
    private func send(_ port: UInt16, _ head: String) throws -> HTTPResponse {
        let c = try TestConnection(port: port)
        try c.send(head + "\r\n\r\n")
        return try c.readResponse()
    }

    private func headers(_ r: HTTPResponse) -> [String: String] { r.json["headers"] as? [String: String] ?? [:] }

    private func url(_ b: ManagedProcess) -> String { "http://127.0.0.1:\(b.port)" }

    /// A proxy whose default pool is `web` and whose one route (`route`, JSON) goes to upstream `admin`.
    private func webAndAdmin(route: String) throws -> (web: ManagedProcess, admin: ManagedProcess, proxy: ManagedProcess) {
        let web = try startBackend(), admin = try startBackend()
        let proxy = try startProxy(config: """
            {"backends": [{"url": "\(url(web))"}],
             "upstreams": {"admin": {"backends": [{"url": "\(url(admin))"}]}},
             "routes": [\(route)]}
            """)
        return (web, admin, proxy)
    }

    @Test func pathsThatResolveToAdminMeetTheAdminRouteWhileTheBackendGetsTheBytesSent() throws {
        let (web, admin, proxy) = try webAndAdmin(route: #"{"path": "/admin", "upstream": "admin"}"#)
        for target in ["/admin", "/public/../admin", "//admin", "/%61dmin", "/%2e%2e/admin", "/public/%2E%2E/admin/x?a=/../b"] {
            let r = try send(proxy.port, "GET \(target) HTTP/1.1\r\nHost: app.test")
            #expect(r.status == 200 && r.json["port"] as? Int == Int(admin.port), "\(target) went to \(r.json["port"] ?? r.status)")
            #expect(r.json["path"] as? String == target, "forwarded byte-exact by default")
        }
        // An encoded slash stays inside its segment (Envoy's default): not the /admin route.
        let slash = try send(proxy.port, "GET /admin%2Fx HTTP/1.1\r\nHost: app.test")
        #expect(slash.json["port"] as? Int == Int(web.port) && slash.json["path"] as? String == "/admin%2Fx")
        for bad in ["/admin%00", "/a%00/admin", "/%zz", "/admin%4"] {
            let r = try send(proxy.port, "GET \(bad) HTTP/1.1\r\nHost: app.test")
            #expect(r.status == 400, "\(bad): \(r.status) \(r.text)")
        }
        // A literal ".." above the root is still refused outright.
        #expect(try send(proxy.port, "GET /../admin HTTP/1.1\r\nHost: app.test").status == 400)
    }

    @Test func stripPrefixAndForwardNormalizedSendTheNormalForm() throws {
        let web = try startBackend(), api = try startBackend()
        func start(_ normalization: String) throws -> ManagedProcess {
            try startProxy(config: """
                {"backends": [{"url": "\(url(web))"}],
                 "upstreams": {"api": {"backends": [{"url": "\(url(api))"}]}},
                 "routes": [{"path": "/api", "upstream": "api", "strip_prefix": true}],
                 "path_normalization": \(normalization)}
                """)
        }
        let original = try start("{}")
        // The raw target does not begin with "/api": the normal form loses the prefix.
        var r = try send(original.port, "GET //api/./users//7?q=%2e%2e HTTP/1.1\r\nHost: app.test")
        #expect(r.json["port"] as? Int == Int(api.port) && r.json["path"] as? String == "/users/7?q=%2e%2e")
        #expect(headers(r)["x-forwarded-prefix"] == "/api")
        r = try send(original.port, "GET /%61pi HTTP/1.1\r\nHost: app.test")
        #expect(r.json["port"] as? Int == Int(api.port) && r.json["path"] as? String == "/")
        // An already normal path loses its prefix as before, the rest byte-exact.
        r = try send(original.port, "GET /api/a%20b?x HTTP/1.1\r\nHost: app.test")
        #expect(r.json["path"] as? String == "/a%20b?x")
        // What climbs out of /api is not /api: the default pool, which gets the bytes sent.
        r = try send(original.port, "GET /api/../etc/passwd HTTP/1.1\r\nHost: app.test")
        #expect(r.json["port"] as? Int == Int(web.port) && r.json["path"] as? String == "/api/../etc/passwd")

        let normalized = try start(#"{"forward": "normalized", "escaped_slashes": "decode"}"#)
        r = try send(normalized.port, "GET //x/../%61b%2fc/./d?q=/../%2e HTTP/1.1\r\nHost: app.test")
        #expect(r.json["port"] as? Int == Int(web.port) && r.json["path"] as? String == "/ab/c/d?q=/../%2e")
        r = try send(normalized.port, "GET /x%2F..%2Fapi%2Fy HTTP/1.1\r\nHost: app.test")
        #expect(r.json["port"] as? Int == Int(api.port) && r.json["path"] as? String == "/y", "decoded %2F splits segments")

        let reject = try start(#"{"escaped_slashes": "reject"}"#)
        #expect(try send(reject.port, "GET /x%2F..%2Fapi HTTP/1.1\r\nHost: app.test").status == 400)
        #expect(try send(reject.port, "GET /x%5cy HTTP/1.1\r\nHost: app.test").status == 400)
        #expect(try send(reject.port, "GET /x?%2F HTTP/1.1\r\nHost: app.test").status == 200, "the query is not the path")
    }

    @Test func anAbsoluteFormTargetRoutesOnItsAuthorityAndTheBackendGetsItAsHost() throws {
        let web = try startBackend(), admin = try startBackend(), dev = try startBackend()
        let proxy = try startProxy(config: """
            {"backends": [{"url": "\(url(web))"}],
             "upstreams": {"admin": {"backends": [{"url": "\(url(admin))"}]},
                           "dev": {"backends": [{"url": "\(url(dev))"}]}},
             "routes": [{"host": "admin.example.test", "upstream": "admin"},
                        {"host": "dev.example.test", "upstream": "dev", "host_header": "backend"}]}
            """)
        var r = try send(proxy.port, "GET http://admin.example.test:8080/x?y HTTP/1.1\r\nHost: public.example.test")
        #expect(r.json["port"] as? Int == Int(admin.port), "RFC 9112 §3.2.2: the target's authority, not Host")
        #expect(r.json["path"] as? String == "/x?y")
        #expect(headers(r)["host"] == "admin.example.test:8080" && headers(r)["x-forwarded-host"] == "admin.example.test:8080")
        // The other way round: Host names admin, the target does not.
        r = try send(proxy.port, "GET http://public.example.test/ HTTP/1.1\r\nHost: admin.example.test")
        #expect(r.json["port"] as? Int == Int(web.port) && headers(r)["host"] == "public.example.test")
        // host_header still applies; X-Forwarded-Host is the authority.
        r = try send(proxy.port, "GET http://dev.example.test/ HTTP/1.1\r\nHost: other.test")
        #expect(r.json["port"] as? Int == Int(dev.port) && headers(r)["host"] == "127.0.0.1:\(dev.port)")
        #expect(headers(r)["x-forwarded-host"] == "dev.example.test")
        // HTTP/1.0 without Host: the authority becomes the Host.
        let c = try TestConnection(port: proxy.port)
        try c.send("GET http://admin.example.test/ HTTP/1.0\r\n\r\n")
        r = try c.readResponse()
        #expect(r.json["port"] as? Int == Int(admin.port) && headers(r)["host"] == "admin.example.test")
        for bad in ["http://user@admin.example.test/", "http://u:p@admin.example.test/", "http://a,b/", "http://[::1/"] {
            let r = try send(proxy.port, "GET \(bad) HTTP/1.1\r\nHost: admin.example.test")
            #expect(r.status == 400, "\(bad): \(r.status)")
        }
    }

    @Test func malformedHostsAreRefusedAndATrailingDotIsTheSameName() throws {
        let (web, admin, proxy) = try webAndAdmin(route: #"{"host": "admin.localhost", "upstream": "admin"}"#)
        for host in ["", "a/b", "a b", "[::1", "x@admin.localhost", "admin.localhost,evil.test", "admin.localhost:80x", "a..b"] {
            let r = try send(proxy.port, "GET / HTTP/1.1\r\nHost: \(host)")
            #expect(r.status == 400 && r.text.contains("invalid Host"), "Host \"\(host)\": \(r.status) \(r.text)")
        }
        for host in ["admin.localhost.", "admin.localhost.:8080", "ADMIN.localhost"] {
            let r = try send(proxy.port, "GET / HTTP/1.1\r\nHost: \(host)")
            #expect(r.json["port"] as? Int == Int(admin.port), "\(host)")
        }
        for host in ["[::1]:8080", "127.0.0.1", "web.localhost"] {
            let r = try send(proxy.port, "GET / HTTP/1.1\r\nHost: \(host)")
            #expect(r.json["port"] as? Int == Int(web.port) && headers(r)["host"] == host, "\(host)")
        }
        // HTTP/1.1 without Host stays a 400; HTTP/1.0 without it is still served.
        #expect(try send(proxy.port, "GET / HTTP/1.1").status == 400)
        let c = try TestConnection(port: proxy.port)
        try c.send("GET / HTTP/1.0\r\n\r\n")
        #expect(try c.readResponse().status == 200)
    }
}
