import Testing
@testable import Proxy

/// `HTTP2RequestHeadBuilder` without I/O: an HTTP/2 request's fields become the HTTP/1.1 head the
/// rest of the proxy reads, and what HTTP/2 forbids or leaves to the server is refused.
struct HTTP2RequestHeadBuilderTests {
    private static let limits = HeadLimits(maxHeadBytes: 32768, maxTargetBytes: 8192, maxHeaderCount: 100)

    private func build(_ fields: [(String, String)], hasBody: Bool = false, maxListBytes: Int = 65536) -> Result<RequestHead, HTTPParseError> {
        var builder = HTTP2RequestHeadBuilder()
        for (name, value) in fields {
            Array(name.utf8).withUnsafeBytes { n in Array(value.utf8).withUnsafeBytes { v in builder.add(name: n, value: v, maxListBytes: maxListBytes) } }
        }
        var head = RequestHead()
        do {
            try builder.build(into: &head, hasBody: hasBody, limits: Self.limits)
            return .success(head)
        } catch {
            return .failure(error)
        }
    }

    private func text(_ head: RequestHead) -> String { String(decoding: head.bytes, as: UTF8.self) }

    private let get: [(String, String)] = [(":method", "GET"), (":scheme", "https"), (":path", "/a?b=1"), (":authority", "example.test")]

    @Test func aRequestBecomesAnHTTP11HeadWithHostFromAuthority() throws {
        let head = try build(get + [("accept", "*/*"), ("cookie", "a=1"), ("user-agent", "t"), ("cookie", "b=2")]).get()
        #expect(text(head).hasPrefix("GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\n"), "\(text(head))")
        #expect(text(head).contains("cookie: a=1; b=2\r\n"), "crumbs joined: \(text(head))")
        #expect(head.isHTTP2 && head.versionMinor == 1 && head.framing == .none && head.keepAlive)
        #expect(head.hostField.map { String(decoding: head.bytes[head.fields[$0].value], as: UTF8.self) } == "example.test")
    }

    @Test func bodiesWithoutALengthGoOnChunkedAndLengthsAreKept() throws {
        let post = [(":method", "POST"), (":scheme", "http"), (":path", "/up"), (":authority", "h")]
        #expect(try build(post, hasBody: true).get().framing == .chunked)
        #expect(try build(post + [("content-length", "5")], hasBody: true).get().framing == .contentLength(5))
        #expect(try build(post + [("content-length", "0")]).get().hasContentLengthField)
    }

    @Test func aHostFieldAloneWorksAndMustAgreeWithAuthority() throws {
        let hostOnly = [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "h.example")]
        #expect(text(try build(hostOnly).get()).contains("Host: h.example\r\n"))
        #expect(try build(get + [("host", "example.test")]).get().isHTTP2)
        guard case .failure(let e) = build(get + [("host", "other.test")]) else { Issue.record("disagreeing Host accepted"); return }
        #expect(e.status == 400 && e.reason.contains(":authority and Host disagree"))
        guard case .failure(let none) = build([(":method", "GET"), (":scheme", "http"), (":path", "/")]) else { Issue.record("no authority accepted"); return }
        #expect(none.status == 400)
    }

    @Test(arguments: [
        [("connection", "keep-alive")], [("keep-alive", "5")], [("upgrade", "websocket")], [("proxy-connection", "x")],
        [("transfer-encoding", "chunked")], [("te", "gzip")], [("x-a", "a\r\nx-injected: 1")], [("x-a\nb", "1")],
        [("x-a", "a\u{0}b")], [("X-Upper", "1")], [(":protocol", "websocket")], [("x b", "1")],
    ])
    func forbiddenFieldsAre400(_ extra: [(String, String)]) {
        guard case .failure(let e) = build(get + extra) else { Issue.record("\(extra) accepted"); return }
        #expect(e.status == 400, "\(extra): \(e)")
    }

    @Test func trailersTEIsAcceptedAndNotForwarded() throws {
        let head = try build(get + [("te", "trailers")]).get()
        #expect(!text(head).lowercased().contains("\r\nte:"), "\(text(head))")
    }

    @Test func schemeConnectAndListSizeAreChecked() {
        guard case .failure(let scheme) = build([(":method", "GET"), (":scheme", "ftp"), (":path", "/"), (":authority", "h")]) else {
            Issue.record("ftp accepted"); return
        }
        #expect(scheme.status == 400 && scheme.reason.contains(":scheme"))
        guard case .failure(let connect) = build([(":method", "CONNECT"), (":authority", "h:443")]) else { Issue.record("CONNECT accepted"); return }
        #expect(connect.status == 501)
        let many = (0..<40).map { ("x-h-\($0)", String(repeating: "v", count: 100)) }
        guard case .failure(let big) = build(get + many, maxListBytes: 2048) else { Issue.record("oversized list accepted"); return }
        #expect(big.status == 431 && big.reason.contains("http2.max_header_list_bytes"))
        guard case .failure(let count) = build(get + (0..<120).map { ("x-\($0)", "1") }) else { Issue.record("120 fields accepted"); return }
        #expect(count.status == 431, "the HTTP/1 head limits apply too: \(count)")
    }

    @Test func resetForgetsTheLastRequest() throws {
        var builder = HTTP2RequestHeadBuilder()
        for (name, value) in get + [("cookie", "a=1"), ("x-old", "1")] {
            Array(name.utf8).withUnsafeBytes { n in Array(value.utf8).withUnsafeBytes { v in builder.add(name: n, value: v, maxListBytes: 65536) } }
        }
        builder.reset()
        for (name, value) in [(":method", "GET"), (":scheme", "http"), (":path", "/new"), (":authority", "n")] {
            Array(name.utf8).withUnsafeBytes { n in Array(value.utf8).withUnsafeBytes { v in builder.add(name: n, value: v, maxListBytes: 65536) } }
        }
        var head = RequestHead()
        try builder.build(into: &head, hasBody: false, limits: Self.limits)
        #expect(text(head) == "GET /new HTTP/1.1\r\nHost: n\r\n\r\n", "\(text(head))")
    }
}
