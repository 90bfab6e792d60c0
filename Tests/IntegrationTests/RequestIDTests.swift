import Foundation
import Testing

/// `X-Request-Id`: generated when missing or malformed, kept when well-formed, the same at the
/// backend and in the response.
struct RequestIDTests {
    @Test func everyRequestGetsAnIdThatTheBackendAndTheClientBothSee() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        var ids = Set<String>()
        for i in 0..<40 {
            let r = try get(proxy.port, "/id/\(i)")  // fresh connections: both workers
            let sent = r.header("X-Request-Id") ?? ""
            let seen = (r.json["headers"] as? [String: String])?["x-request-id"]
            #expect(!sent.isEmpty && seen == sent, "client got \(sent), backend saw \(seen ?? "none")")
            ids.insert(sent)
        }
        #expect(ids.count == 40, "ids are unique across requests and workers")
        // A well-formed client id is kept; a malformed one is replaced, never passed on.
        let kept = try get(proxy.port, "/kept", headers: ["X-Request-Id": "trace-0af7651916cd43dd8448eb211c80319c"])
        #expect(kept.header("X-Request-Id") == "trace-0af7651916cd43dd8448eb211c80319c")
        #expect((kept.json["headers"] as? [String: String])?["x-request-id"] == "trace-0af7651916cd43dd8448eb211c80319c")
        let bad = try get(proxy.port, "/bad", headers: ["X-Request-Id": "<script>alert(1)</script>"])
        let replaced = bad.header("X-Request-Id") ?? ""
        #expect(!replaced.isEmpty && !replaced.contains("<"))
        #expect((bad.json["headers"] as? [String: String])?["x-request-id"] == replaced)
        // Errors the proxy answers itself carry one too.
        let proxyOnly = try startProxy(config: """
            {"upstreams": {"api": {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}]}}, "routes": [{"path": "/api", "upstream": "api"}]}
            """)
        let miss = try get(proxyOnly.port, "/nothing-here", headers: ["X-Request-Id": "abc-123"])
        #expect(miss.status == 404 && miss.header("X-Request-Id") == "abc-123")
    }
}
