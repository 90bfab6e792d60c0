import Testing
@testable import Proxy

/// The header rewriter: wire bytes in, exact wire bytes out.
struct HeaderRewriterTests {
    private func request(_ text: String) throws -> RequestHead {
        try HeadParser.parseRequest(Array(text.utf8), limits: HeadLimits())
    }

    private func response(_ text: String, head: Bool = false) throws -> ResponseHead {
        try HeadParser.parseResponse(Array(text.utf8), requestWasHEAD: head)
    }

    private func upstreamText(_ head: RequestHead, framing: HeaderRewriter.OutgoingFraming = .none, peer: String = "192.0.2.7") -> String {
        var req = head
        var rewriter = HeaderRewriter()
        var out = ByteBuffer(capacity: 8)
        rewriter.writeUpstreamRequest(&req, framing: framing, peerIP: Array(peer.utf8), into: &out)
        return String(decoding: out.array, as: UTF8.self)
    }

    @Test func stripsHopByHopHeadersAndTheHeadersConnectionNames() throws {
        let req = try request("GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n")
        let text = upstreamText(req)
        // `TE: trailers` is the one TE value passed on (with the Connection option it needs).
        #expect(text == "GET /a HTTP/1.1\r\nHost: example.com\r\nTE: trailers\r\nConnection: TE\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.7\r\nX-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\nForwarded: for=192.0.2.7;proto=http;host=\"example.com\"\r\nVia: 1.1 \(String(decoding: ProxyIdentity.viaName, as: UTF8.self))\r\n\r\n")
    }

    @Test func dropsOtherTransferCodingsRequestedWithTE() throws {
        let req = try request("GET /a HTTP/1.1\r\nHost: h\r\nTE: gzip, deflate\r\nConnection: TE\r\n\r\n")
        #expect(!upstreamText(req).contains("TE:"))
    }

    @Test func neverDropsHostEvenWhenConnectionNamesIt() throws {
        let req = try request("GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: host\r\n\r\n")
        #expect(upstreamText(req).hasPrefix("GET /x HTTP/1.1\r\nHost: example.com\r\n"))
    }

    @Test func appendsThePeerToEveryExistingForwardedForValueInOrder() throws {
        let req = try request("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n\r\n")
        #expect(upstreamText(req).contains("\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n"))
    }

    @Test func replacesClientSuppliedRealIPProtoAndForwardedHost() throws {
        let req = try request("GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n")
        let text = upstreamText(req)
        #expect(!text.contains("6.6.6.6"))
        #expect(!text.contains("https"))
        #expect(!text.contains("evil"))
        #expect(text.contains("X-Forwarded-Host: h\r\n"))
    }

    @Test func reframesRequestBodiesWithItsOwnFramingHeaders() throws {
        let chunked = try request("POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        let c = upstreamText(chunked, framing: .chunked)
        #expect(c.contains("Transfer-Encoding: chunked\r\n"))
        #expect(c.components(separatedBy: "Transfer-Encoding").count == 2)
        let length = try request("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
        let l = upstreamText(length, framing: .contentLength(5))
        #expect(l.components(separatedBy: "Content-Length: 5\r\n").count == 2, "duplicate lengths are sent once")
    }

    @Test func alwaysSpeaksHTTP11ToTheUpstreamWithAHost() throws {
        var req = try request("GET /old HTTP/1.0\r\n\r\n")
        var rewriter = HeaderRewriter()
        var out = ByteBuffer(capacity: 8)
        rewriter.writeUpstreamRequest(&req, framing: .none, peerIP: Array("1.2.3.4".utf8), defaultHost: Array("backend:3001".utf8), into: &out)
        #expect(String(decoding: out.array, as: UTF8.self).hasPrefix("GET /old HTTP/1.1\r\nHost: backend:3001\r\n"))
    }

    @Test func stripsHopByHopHeadersFromResponsesAndReframes() throws {
        var resp = try response("HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\nKeep-Alive: timeout=4\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")
        var rewriter = HeaderRewriter()
        var out = ByteBuffer(capacity: 8)
        rewriter.writeClientResponse(&resp, framing: .chunked, clientVersionMinor: 1, closeAfter: false, into: &out)
        #expect(String(decoding: out.array, as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    /// `Connection: close` names a field too: one literally called `Close` is hop-by-hop then.
    @Test func aFieldNamedCloseIsDroppedWhenConnectionCloseNamesIt() throws {
        var resp = try response("HTTP/1.1 200 OK\r\nConnection: close\r\nClose: x\r\nContent-Length: 0\r\n\r\n")
        var rewriter = HeaderRewriter()
        var out = ByteBuffer(capacity: 8)
        rewriter.writeClientResponse(&resp, framing: .contentLength(0), clientVersionMinor: 1, closeAfter: false, into: &out)
        #expect(!String(decoding: out.array, as: UTF8.self).contains("Close: x"))
        let req = try request("GET / HTTP/1.1\r\nHost: a\r\nClose: y\r\nConnection: close\r\n\r\n")
        #expect(!upstreamText(req).contains("Close: y"))
    }

    @Test func keepsContentLengthOfBodilessResponsesAndMarksClosing() throws {
        var resp = try response("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", head: true)
        var rewriter = HeaderRewriter()
        var out = ByteBuffer(capacity: 8)
        rewriter.writeClientResponse(&resp, framing: .none, clientVersionMinor: 1, closeAfter: true, into: &out)
        #expect(String(decoding: out.array, as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nConnection: close\r\n\r\n")
    }

    @Test func tellsHTTP10ClientsThatTheConnectionStaysOpen() throws {
        var resp = try response("HTTP/1.1 204 No Content\r\n\r\n")
        var rewriter = HeaderRewriter()
        var out = ByteBuffer(capacity: 8)
        rewriter.writeClientResponse(&resp, framing: .none, clientVersionMinor: 0, closeAfter: false, into: &out)
        #expect(String(decoding: out.array, as: UTF8.self) == "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n")
    }
}

/// The proxy's own answers are values (`LocalReply`); HTTP/1 is one way of writing them.
struct LocalReplyTests {
    @Test func aLocalReplyIsWrittenAsHTTP11WithItsFieldsAndRequestID() {
        let reply = LocalReply.text(503, "Service Unavailable: out of descriptors", fields: [(name: "Retry-After", value: "1")])
        #expect(reply.status == 503 && reply.body == Array("Service Unavailable: out of descriptors\n".utf8))
        var out = ByteBuffer(capacity: 8)
        HTTP1LocalReplyWriter.write(reply, keepAlive: true, headOnly: false, requestID: Array("abc".utf8), into: &out)
        #expect(String(decoding: out.array, as: UTF8.self) == "HTTP/1.1 503 Service Unavailable\r\nServer: swift-proxy\r\n"
            + "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 40\r\nCache-Control: no-store\r\n"
            + "Retry-After: 1\r\nX-Request-Id: abc\r\nConnection: keep-alive\r\n\r\nService Unavailable: out of descriptors\n")
        var head = ByteBuffer(capacity: 8)
        HTTP1LocalReplyWriter.write(reply, keepAlive: false, headOnly: true, requestID: [], into: &head)
        let text = String(decoding: head.array, as: UTF8.self)
        #expect(text.hasSuffix("Content-Length: 40\r\nCache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"),
                "a HEAD answer keeps the length, not the body")
    }
}
