import Foundation
import Glibc
import Testing

/// `https://` backends, against an origin on Python's ssl module (`Python/tls_origin.py`):
/// verification against a CA file, SNI, session resumption per backend, pooled TLS connections
/// reused, health probes over TLS, mutual TLS, and the 502 a failed handshake gives.
@Suite(.serialized) struct TLSBackendTests {
    static let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/tls_origin.py").path

    /// The origin serving `leaf`; with `clientCA` it demands a client certificate.
    static func origin(_ leaf: (cert: String, key: String), clientCA: String? = nil) throws -> ManagedProcess {
        try ManagedProcess("/usr/bin/python3", [script, leaf.cert, leaf.key] + (clientCA.map { [$0] } ?? []), absolute: true)
    }

    static func config(origin: UInt16, tls: String, pool: String = "", unhealthy: Int = 1) -> String {
        """
        {"backends":[{"id":"secure","url":"https://127.0.0.1:\(origin)","tls":\(tls)}],
         "health_check":{"path":"/health","interval_ms":100,"timeout_ms":1000,"healthy_threshold":1,"unhealthy_threshold":\(unhealthy)}\(pool)}
        """
    }

    /// A backend whose handshake fails is refused with `reason`: a 502 naming it when the request
    /// gets there first, else a 503 once the first probe (which decides at start) marked it down,
    /// with the reason in `/_health`.
    static func expectRefused(_ port: UInt16, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try get(port, "/")
        if r.status == 502 {
            #expect(r.text.contains(reason), "\(r.text)", sourceLocation: sourceLocation)
        } else {
            #expect(r.status == 503, "\(r.status) \(r.text)", sourceLocation: sourceLocation)
        }
        #expect(eventually(3) { ((try? get(port, "/_health").text) ?? "").contains(reason) }, "the probe says why", sourceLocation: sourceLocation)
    }

    @Test func anHTTPSBackendIsVerifiedGetsSNIResumesAndIsPooled() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let origin = try Self.origin(try certs.leaf("origin", names: ["origin.test", "127.0.0.1"]))
        defer { origin.stop() }
        // No pooling first: each request is a new connection, so resumption shows.
        let proxy = try startProxy(config: Self.config(origin: origin.port, tls: "{\"ca\":\"\(certs.caFile)\",\"server_name\":\"origin.test\"}",
                                                       pool: ",\"pool\":{\"max_idle_per_backend\":0}"), workers: 1)
        defer { proxy.stop() }
        var answers: [[String: Any]] = []
        for i in 0..<4 {
            let r = try get(proxy.port, "/r\(i)")
            #expect(r.status == 200, "\(r.text)")
            answers.append(r.json)
        }
        #expect(answers.allSatisfy { $0["sni"] as? String == "origin.test" }, "\(answers)")
        #expect(answers.allSatisfy { $0["forwarded_proto"] as? String == "http" })
        #expect(answers.first?["resumed"] as? Bool == false)
        #expect(answers.dropFirst().allSatisfy { $0["resumed"] as? Bool == true }, "later connections resume: \(answers)")
        #expect(Set(answers.compactMap { $0["client_port"] as? Int }).count == 4, "one connection per request")
        // Health probes go over TLS too.
        let health = try get(proxy.port, "/_health").text
        #expect(health.contains("\"healthy\":true") || health.contains("\"status\":\"healthy\""), "\(health)")
    }

    @Test func pooledTLSConnectionsAreReusedAndTheHostHasNoDefaultPort() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let origin = try Self.origin(try certs.leaf("origin", names: ["127.0.0.1"]))
        defer { origin.stop() }
        let proxy = try startProxy(config: Self.config(origin: origin.port, tls: "{\"ca\":\"\(certs.caFile)\"}"), workers: 1)
        defer { proxy.stop() }
        var ports: [Int] = []
        let c = try TestConnection(port: proxy.port)
        for i in 0..<5 {
            // Pauses let the origin's TLS 1.3 tickets arrive while the connection idles in the pool.
            usleep(50_000)
            let r = try c.request("POST", "/p\(i)", body: Array(repeating: UInt8(ascii: "z"), count: 70_000))
            #expect(r.status == 200, "\(r.text)")
            let answer = r.json
            #expect(answer["body_bytes"] as? Int == 70_000 && answer["version"] as? String == "TLSv1.3", "\(answer)")
            #expect(answer["sni"] is NSNull, "no SNI for an IP address: \(answer)")
            #expect(answer["host"] as? String == "test.local")
            if let p = answer["client_port"] as? Int { ports.append(p) }
        }
        #expect(Set(ports).count == 1, "the pooled TLS connection is reused: \(ports)")
    }

    @Test func aFailedVerificationIsA502NamingTheReasonAndVerifyFalseConnects() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let origin = try Self.origin(try certs.leaf("origin", names: ["origin.test"]))
        defer { origin.stop() }
        // The system store does not know the test CA.
        let strict = try startProxy(config: Self.config(origin: origin.port, tls: "{\"server_name\":\"origin.test\"}"), workers: 1)
        defer { strict.stop() }
        try Self.expectRefused(strict.port, "certificate verify failed")
        // The right CA but another name: refused as well.
        let wrongName = try startProxy(config: Self.config(origin: origin.port, tls: "{\"ca\":\"\(certs.caFile)\",\"server_name\":\"other.test\"}"), workers: 1)
        defer { wrongName.stop() }
        try Self.expectRefused(wrongName.port, "certificate verify failed")
        // verify: false connects, with a warning at start.
        let lax = try startProxy(config: Self.config(origin: origin.port, tls: "{\"verify\":false}"), workers: 1)
        defer { lax.stop() }
        #expect(try get(lax.port, "/").status == 200)
        #expect(lax.log.contains("tls.verify is false"), "\(lax.log)")
    }

    @Test func mutualTLSSendsTheClientCertificateWhenConfigured() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let origin = try Self.origin(try certs.leaf("origin", names: ["127.0.0.1"]), clientCA: certs.caFile)
        defer { origin.stop() }
        let client = try certs.leaf("proxy-client", names: ["proxy.client"])
        let without = try startProxy(config: Self.config(origin: origin.port, tls: "{\"ca\":\"\(certs.caFile)\"}"), workers: 1)
        defer { without.stop() }
        // TLS 1.3: the server refuses the missing certificate once the client's handshake is done.
        try Self.expectRefused(without.port, "certificate required")
        let with = try startProxy(config: Self.config(origin: origin.port,
                                                      tls: "{\"ca\":\"\(certs.caFile)\",\"cert\":\"\(client.cert)\",\"key\":\"\(client.key)\"}"), workers: 1)
        defer { with.stop() }
        let r = try get(with.port, "/m")
        #expect(r.status == 200 && r.json["client_cert"] as? String == "proxy.client", "\(r.text)")
    }
}
