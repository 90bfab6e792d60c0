import Testing
@testable import Proxy

/// `compress`: the decision for each response and the head the client gets, on parsed heads with
/// no I/O; the config's forms and errors. (Bodies, framing and flushing through a running proxy:
/// IntegrationTests/CompressionTests.)
@Suite struct ResponseCompressionTests {
    private func request(_ fields: String, method: String = "GET", version: String = "HTTP/1.1") -> RequestHead {
        try! HeadParser.parseRequest(Array("\(method) / \(version)\r\nHost: a\r\n\(fields)\r\n".utf8),
                                     limits: HeadLimits(maxHeadBytes: 8192, maxTargetBytes: 8192, maxHeaderCount: 64))
    }

    private func response(_ fields: String, status: String = "200 OK") -> ResponseHead {
        try! HeadParser.parseResponse(Array("HTTP/1.1 \(status)\r\n\(fields)\r\n".utf8), requestWasHEAD: false)
    }

    private let gzipClient = "Accept-Encoding: gzip, deflate\r\n"
    private let json = "Content-Type: application/json\r\nContent-Length: 5000\r\n"

    @Test func whichResponsesAreCompressed() {
        let c = ResponseCompression(CompressionConfig())
        func decide(_ req: RequestHead, _ res: ResponseHead) -> ResponseCompression.Decision { c.decide(req, res) }
        let yes = ResponseCompression.Decision(vary: true, coding: .gzip)
        #expect(decide(request(gzipClient), response(json)) == yes)
        #expect(decide(request("Accept-Encoding: br, gzip\r\n"), response(json)) == .init(vary: true, coding: .brotli))
        // Not for the client: it varies all the same.
        #expect(decide(request(""), response(json)) == .init(vary: true, coding: nil))
        #expect(decide(request("Accept-Encoding: identity\r\n"), response(json)) == .init(vary: true, coding: nil))
        #expect(decide(request(gzipClient, version: "HTTP/1.0"), response(json)) == .init(vary: true, coding: nil))
        // HEAD: the Vary a GET would carry, no coding.
        #expect(decide(request(gzipClient, method: "HEAD"), response(json)) == .init(vary: true, coding: nil))
        #expect(decide(request(gzipClient, method: "HEAD"), response("Content-Type: application/json\r\nContent-Length: 10\r\n")) == .init())
        // Never touched.
        for status in ["204 No Content", "206 Partial Content", "304 Not Modified"] {
            #expect(decide(request(gzipClient), response(json, status: status)) == .init(), "\(status)")
        }
        #expect(decide(request(gzipClient), response(json + "Content-Encoding: gzip\r\n")) == .init())
        #expect(decide(request(gzipClient), response(json + "Content-Encoding: identity\r\n")) == yes)
        #expect(decide(request(gzipClient), response(json + "Cache-Control: public, No-Transform\r\n")) == .init())
        #expect(decide(request(gzipClient), response("Content-Type: application/json\r\nContent-Length: 1023\r\n")) == .init())
        #expect(decide(request(gzipClient), response("Content-Type: application/json\r\nContent-Length: 1024\r\n")) == yes)
        #expect(decide(request(gzipClient), response("Content-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n")) == yes)
        #expect(decide(request(gzipClient), response("Content-Type: TEXT/CSS\r\nContent-Length: 2000\r\n")) == yes)
        #expect(decide(request(gzipClient), response("Content-Type: image/png\r\nContent-Length: 5000\r\n")) == .init())
        #expect(decide(request(gzipClient), response("Content-Length: 5000\r\n")) == .init())
        #expect(decide(request(gzipClient), response(json + "Content-Digest: sha-256=:x:\r\n")) == .init())
        #expect(decide(request(gzipClient), response(json + "Content-MD5: x\r\n")) == .init())
        #expect(decide(request(gzipClient), response("Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n", status: "205 Reset Content")) == .init())
        // Event streams only when named.
        let events = response("Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n")
        #expect(decide(request(gzipClient), events) == .init())
        var named = CompressionConfig()
        named.types = ["text/event-stream"]
        #expect(ResponseCompression(named).decide(request(gzipClient), events) == yes)
        // The server's order among what the client takes.
        var gzipFirst = CompressionConfig()
        gzipFirst.encodings = ["gzip", "br"]
        #expect(ResponseCompression(gzipFirst).decide(request("Accept-Encoding: br, gzip\r\n"), response(json)) == yes)
        gzipFirst.encodings = ["br"]
        #expect(ResponseCompression(gzipFirst).decide(request(gzipClient), response(json)) == .init(vary: true, coding: nil))
    }

    @Test func theHeadTheClientGets() throws {
        var head = response("Content-Type: application/json\r\nContent-Length: 5000\r\nETag: \"v1\"\r\nAccept-Ranges: bytes\r\n"
            + "Vary: Origin\r\nConnection: keep-alive\r\n")
        try ResponseCompression.rewrite(&head, .init(vary: true, coding: .brotli))
        #expect(head.framing == .chunked)
        #expect(head.value(of: "content-length") == nil)
        #expect(head.value(of: "accept-ranges") == nil)
        #expect(head.value(of: "etag") == "W/\"v1\"")
        #expect(head.value(of: "vary") == "Origin, Accept-Encoding")
        #expect(head.value(of: "content-encoding") == "br")
        #expect(head.value(of: "content-type") == "application/json")
        #expect(head.status == 200 && head.keepAlive)

        // Accept-Encoding named in a second Vary field: not added to the first one.
        var split = response("Content-Type: text/plain\r\nContent-Length: 5000\r\nVary: Origin\r\nVary: Accept-Encoding\r\n")
        try ResponseCompression.rewrite(&split, .init(vary: true, coding: .gzip))
        #expect(split.fields.filter { split.bytes.equalsIgnoringCase($0.name, "vary") }.map { split.bytes.string($0.value) } == ["Origin", "Accept-Encoding"])

        // Vary only: length and validators stay; an Accept-Encoding already named is not repeated.
        var plain = response("Content-Type: text/plain\r\nContent-Length: 5000\r\nETag: W/\"w\"\r\nVary: accept-encoding\r\n")
        try ResponseCompression.rewrite(&plain, .init(vary: true, coding: nil))
        #expect(plain.framing == .contentLength(5000))
        #expect(plain.value(of: "etag") == "W/\"w\"")
        #expect(plain.fields.filter { plain.bytes.equalsIgnoringCase($0.name, "vary") }.count == 1)
        #expect(plain.value(of: "vary") == "accept-encoding")

        // Fields the backend names in Connection go (hop-by-hop), not the proxy's own.
        var named = response("Content-Type: text/html\r\nContent-Length: 5000\r\nConnection: Content-Encoding, Vary, close\r\n"
            + "Vary: Cookie\r\nContent-Encoding: identity\r\nX-Kept: 1\r\n")
        try ResponseCompression.rewrite(&named, .init(vary: true, coding: .gzip))
        #expect(named.value(of: "content-encoding") == "gzip" && named.value(of: "vary") == "Accept-Encoding")
        #expect(named.value(of: "connection") == "close" && named.value(of: "x-kept") == "1" && named.keepAlive == false)
        #expect(named.fields.filter { named.bytes.equalsIgnoringCase($0.name, "content-encoding") }.count == 1)

        var lookalike = response("Content-Type: text/plain\r\nContent-Length: 5000\r\nVary: X-Accept-Encoding-Foo\r\n")
        try ResponseCompression.rewrite(&lookalike, .init(vary: true, coding: .gzip))
        #expect(lookalike.value(of: "vary") == "X-Accept-Encoding-Foo, Accept-Encoding")

        // A 304 for a client that would get the compressed 200: the same weak tag and Vary.
        let c = ResponseCompression(CompressionConfig())
        var notModified = response("ETag: \"v1\"\r\nCache-Control: max-age=60\r\n", status: "304 Not Modified")
        let holdsCompressed = gzipClient + "If-None-Match: W/\"v1\"\r\n"
        let nm = c.notModifiedDecision(request(holdsCompressed), notModified)
        #expect(nm == .init(vary: true, coding: .gzip))
        #expect(c.notModifiedDecision(request("Accept-Encoding: identity\r\nIf-None-Match: W/\"v1\"\r\n"), notModified) == .init())
        // A client holding the strong tag was sent the identity body: its 304 stays as it is.
        #expect(c.notModifiedDecision(request(gzipClient + "If-None-Match: \"v1\"\r\n"), notModified) == .init())
        try ResponseCompression.rewrite(&notModified, nm, headOnly: true)
        #expect(notModified.status == 304 && notModified.framing == .none)
        #expect(notModified.value(of: "etag") == "W/\"v1\"" && notModified.value(of: "vary") == "Accept-Encoding")
        #expect(notModified.value(of: "content-encoding") == nil && notModified.value(of: "transfer-encoding") == nil)

        var star = response("Content-Type: text/plain\r\nContent-Length: 5000\r\nVary: *\r\n")
        try ResponseCompression.rewrite(&star, .init(vary: true, coding: .gzip))
        #expect(star.value(of: "vary") == "*")
        var none = response("Content-Type: text/plain\r\nContent-Length: 5000\r\n")
        try ResponseCompression.rewrite(&none, .init(vary: true, coding: .gzip))
        #expect(none.value(of: "vary") == "Accept-Encoding")
        #expect(none.value(of: "content-encoding") == "gzip")
    }

    @Test func compressorsEmitEverythingGivenAtEachFlush() {
        let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog ", count: 4000).utf8)
        for coding in ContentCoding.allCases {
            var released = false
            do {
                guard let c = StreamCompressor(coding: coding, level: 5, onRelease: { released = true }) else {
                    Issue.record("no \(coding) compressor"); return
                }
                var out: [UInt8] = []
                text.withUnsafeBytes { #expect(c.compress($0, .process) { out += $0 }) }
                let beforeFlush = out.count
                #expect(c.compress(UnsafeRawBufferPointer(start: nil, count: 0), .flush) { out += $0 })
                #expect(out.count > beforeFlush, "a flush gives out what the coder held")
                let flushed = out.count
                // A second flush with nothing new adds (almost) nothing.
                #expect(c.compress(UnsafeRawBufferPointer(start: nil, count: 0), .flush) { out += $0 })
                #expect(out.count - flushed <= 8)
                #expect(c.compress(UnsafeRawBufferPointer(start: nil, count: 0), .finish) { out += $0 })
                #expect(c.finished && c.bytesIn == UInt64(text.count) && c.bytesOut == UInt64(out.count))
                #expect(out.count < text.count / 20, "\(coding): \(out.count) bytes for \(text.count)")
                if coding == .gzip { #expect(out.prefix(2) == [0x1f, 0x8b]) }
                // Nothing after the end.
                text.withUnsafeBytes { #expect(!c.compress($0, .process) { _ in }) }
            }
            #expect(released, "the owner hears when the coder's memory goes")
        }
    }

    @Test func configForms() throws {
        func load(_ compress: String, route: String = "") throws(ConfigError) -> ProxyConfig {
            try ConfigLoader.parse(Array("""
                {"backends": [{"url": "http://127.0.0.1:3001"}], "compress": \(compress),
                 "routes": [{"path": "/", "upstream": "default"\(route)}]}
                """.utf8), file: "config.json")
        }
        #expect(try load("true").compress == CompressionConfig())
        #expect(try load("false").compress == nil)
        let custom = try load(#"{"types": ["Text/*", "application/json"], "gzip_level": 9, "encodings": ["gzip"]}"#, route: #", "compress": false"#)
        #expect(custom.compress?.types == ["text/*", "application/json"])
        #expect(custom.compress?.gzipLevel == 9 && custom.compress?.encodings == ["gzip"])
        #expect(custom.routes[0].compress == .off)
        #expect(custom.routes[0].compress.resolved(over: custom.compress) == nil)
        #expect(RouteCompression.inherit.resolved(over: custom.compress) == custom.compress)

        func problem(_ compress: String) -> String {
            do { _ = try load(compress); return "loaded" } catch { return error.description }
        }
        #expect(problem(#"{"gzip_level": 10}"#).contains("gzip_level"))
        #expect(problem(#"{"types": ["text"]}"#).contains("\"type/subtype\""))
        #expect(problem(#"{"types": ["*/*"]}"#).contains("\"type/subtype\""))
        #expect(problem(#"{"types": ["text/html; charset=utf-8"]}"#).contains("no parameters"))
        #expect(problem(#"{"encodings": ["brotli"]}"#).contains("expected \"br\" or \"gzip\""))
        #expect(problem(#"{"encodings": ["gzp"]}"#).contains("did you mean \"gzip\""))
        #expect(problem(#"{"encodings": []}"#).contains("non-empty"))
        #expect(problem(#"{"gzip_levle": 5}"#).contains("gzip_level"))
    }
}
