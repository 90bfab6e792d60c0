import Foundation
import Glibc
import Testing

/// What the proxy tells backends about the request's path through it, and what it refuses on
/// sight (issue 12 §1.9, §1.10, §1.17).
@Suite(.timeLimit(.minutes(2)))
struct ForwardingRulesTests {

    @Test func aClientsForwardedFieldIsReplacedLikeXForwardedFor() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let r = try TestConnection(port: proxy.port).request("GET", "/f", headers: ["Forwarded": "for=6.6.6.6;host=evil"])
        let headers = r.json["headers"] as? [String: String] ?? [:]
        #expect(headers["forwarded"] == "for=127.0.0.1;proto=http;host=\"test.local\"", "\(headers)")
        #expect(headers["x-forwarded-for"] == "127.0.0.1")
    }

    @Test func aRequestThatComesBackThroughTheSameProxyGets508() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let first = try TestConnection(port: proxy.port).request("GET", "/a")
        let via = try #require((first.json["headers"] as? [String: String])?["via"])
        #expect(via.hasPrefix("1.1 swift-proxy-"))
        // The same request arriving again, as it would from a backend that points at the proxy.
        let looped = try TestConnection(port: proxy.port).request("GET", "/a", headers: ["Via": "1.0 edge, \(via)"])
        #expect(looped.status == 508)
        #expect(looped.text.contains("Loop Detected"))
        // Another proxy's Via is no loop.
        #expect(try TestConnection(port: proxy.port).request("GET", "/a", headers: ["Via": "1.1 swift-proxy-00000000"]).status == 200
                || via == "1.1 swift-proxy-00000000")
    }

    @Test func aTLSHandshakeOnTheCleartextPortIsAnsweredAtOnce() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        let start = Date()
        // The first bytes of a ClientHello: handshake record, TLS 1.0 record version.
        try c.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
        let reply = String(decoding: c.readToEnd(), as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 400"), "\(reply)")
        #expect(reply.contains("TLS"))
        #expect(Date().timeIntervalSince(start) < 3, "took \(Date().timeIntervalSince(start)) s")
        #expect(eventually(2) { proxy.log.contains("TLS handshake from 127.0.0.1") }, "\(proxy.log)")
    }
}
