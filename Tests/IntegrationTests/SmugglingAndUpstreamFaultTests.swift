import Foundation
import Glibc
import Testing

/// Request smuggling, upstream protocol violations and faults, end to end: what the client is
/// told, the exact bytes the backend received, whether a spoiled upstream connection is ever used
/// again, and whether the proxy's descriptors come back after each fault.
///
/// Serialized: the slowloris and descriptor checks are about this suite's own proxies, and need no
/// competition from its other tests for the two cores.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct SmugglingAndUpstreamFaultTests {

    // MARK: - 1. Request smuggling

    @Test func refusesConflictingOrMalformedMessageLengthsBeforeAnyByteReachesTheBackend() throws {
        let origin = ByteRecordingOrigin()
        defer { origin.stop() }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let cases: [(String, String)] = [
            ("CL.TE: Content-Length then Transfer-Encoding",
             post("/clte", "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG")),
            ("TE.CL: Transfer-Encoding then Content-Length",
             post("/tecl", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n")),
            ("Content-Length: 0 with Transfer-Encoding",
             post("/cl0te", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("Content-Length with an obfuscated Transfer-Encoding",
             post("/clxte", "Content-Length: 4\r\nTransfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("two different Content-Length fields", post("/cl2", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")),
            ("a Content-Length list with different values", post("/cllist", "Content-Length: 5, 6\r\n", "hello!")),
            ("a Content-Length with a plus sign", post("/clplus", "Content-Length: +5\r\n", "hello")),
            ("a negative Content-Length", post("/clminus", "Content-Length: -5\r\n", "hello")),
            ("a space inside Content-Length", post("/clspace", "Content-Length: 1 0\r\n", "helloworld")),
            ("a hexadecimal Content-Length", post("/clhex", "Content-Length: 0x5\r\n", "hello")),
            ("a fractional Content-Length", post("/clfrac", "Content-Length: 5.0\r\n", "hello")),
            ("an empty Content-Length", post("/clempty", "Content-Length: \r\n", "hello")),
            ("a Content-Length past Int64.max", post("/clbig", "Content-Length: 9223372036854775808\r\n", "hello")),
            ("a Content-Length past 2^64 (wraps to 5)", post("/clwrap", "Content-Length: 18446744073709551621\r\n", "hello")),
            ("whitespace before the colon of Content-Length", post("/clws", "Content-Length : 5\r\n", "hello")),
            ("whitespace before the colon of Transfer-Encoding",
             post("/tews", "Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("a tab before the colon of Transfer-Encoding",
             post("/tetab", "Transfer-Encoding\t: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("Transfer-Encoding in an HTTP/1.0 request",
             "POST /te10 HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("obs-fold continuing an empty Transfer-Encoding",
             post("/fold1", "Transfer-Encoding:\r\n chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("obs-fold after Transfer-Encoding: chunked",
             post("/fold2", "Transfer-Encoding: chunked\r\n\tidentity\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("obs-fold continuing a Content-Length", post("/fold3", "Content-Length: 5\r\n 6\r\n", "hello!")),
            ("a vertical tab before chunked", post("/vt", "Transfer-Encoding:\u{0B}chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("a bare CR inside the Transfer-Encoding line",
             post("/cr", "Transfer-Encoding: chunked\rX: y\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("a NUL after chunked", post("/nul", "Transfer-Encoding: chunked\u{0}\r\n", "5\r\nhello\r\n0\r\n\r\n")),
            ("a non-ASCII letter in the Transfer-Encoding name",
             post("/dotless", "Transfer-Encod\u{131}ng: chunked\r\nContent-Length: 5\r\n", "hello")),
            ("CR CR LF where the head should end (a second request behind it)",
             "POST /crcr HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
        for (label, raw) in cases {
            try expectRefused(proxy.port, raw, statuses: [400], label)
        }
        try expectBackendSawOnlyABarrierRequest(proxy.port, origin)
        #expect(origin.connections.count == 1, "refused before the proxy even connected upstream")
    }

    /// RFC 9112 §6.1 says 501 for a coding the server does not understand, §6.3 says 400 when
    /// `chunked` is not the final coding; DESIGN.md §4 allows either. What matters for smuggling:
    /// refused, closed, and nothing forwarded.
    @Test func refusesObfuscatedTransferEncodingsWith400Or501AndForwardsNothing() throws {
        let origin = ByteRecordingOrigin()
        defer { origin.stop() }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let body = "5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        let cases: [(String, String)] = [
            ("xchunked", post("/te1", "Transfer-Encoding: xchunked\r\n", body)),
            ("chunked followed by identity", post("/te2", "Transfer-Encoding: chunked, identity\r\n", body)),
            ("identity followed by chunked", post("/te3", "Transfer-Encoding: identity, chunked\r\n", body)),
            ("gzip followed by chunked", post("/te4", "Transfer-Encoding: gzip, chunked\r\n", body)),
            ("chunked twice in one field", post("/te5", "Transfer-Encoding: chunked, chunked\r\n", body)),
            ("chunked in two fields", post("/te6", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", body)),
            ("chunked then identity in two fields",
             post("/te7", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", body)),
            ("a quoted chunked", post("/te8", "Transfer-Encoding: \"chunked\"\r\n", body)),
            ("chunked with a parameter", post("/te9", "Transfer-Encoding: chunked;q=1\r\n", body)),
            ("an empty Transfer-Encoding", post("/te10", "Transfer-Encoding: \r\n", body)),
            ("a misspelt chunk", post("/te11", "Transfer-Encoding: chunk\r\n", body)),
        ]
        for (label, raw) in cases {
            try expectRefused(proxy.port, raw, statuses: [400, 501], label)
        }
        try expectBackendSawOnlyABarrierRequest(proxy.port, origin)
        #expect(origin.connections.count == 1, "refused before the proxy even connected upstream")
    }

    @Test func forwardsTolerableFramingVariantsAsOneRequestWithExactlyTheBodyTheProxyFramed() throws {
        let origin = ByteRecordingOrigin()
        defer { origin.stop() }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let te = "transfer-encoding: chunked", cl5 = "content-length: 5"
        // (label, request, the one framing field the backend must see, raw body on the wire, decoded body)
        let cases: [(String, String, String, String, String)] = [
            ("a tab before chunked (OWS)", post("/a1", "Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
             te, "5\r\nhello\r\n0\r\n\r\n", "hello"),
            ("upper-case CHUNKED with trailing whitespace",
             post("/a2", "Transfer-Encoding: CHUNKED \t\r\n", "5\r\nhello\r\n0\r\n\r\n"), te, "5\r\nhello\r\n0\r\n\r\n", "hello"),
            ("chunk extensions and a trailer (both dropped)",
             post("/a3", "Transfer-Encoding: chunked\r\n", "5;name=value;q=\"a b\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
             te, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"),
            ("a chunked body that is only the last chunk", post("/a4", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
             te, "0\r\n\r\n", ""),
            ("the same Content-Length twice", post("/a5", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
             cl5, "hello", "hello"),
            ("a Content-Length list of equal values", post("/a6", "Content-Length: 5, 5\r\n", "hello"), cl5, "hello", "hello"),
            ("a Content-Length with whitespace around it", post("/a7", "Content-Length: \t5 \r\n", "hello"), cl5, "hello", "hello"),
            ("a Content-Length with leading zeros", post("/a8", "Content-Length: 005\r\n", "hello"), cl5, "hello", "hello"),
            ("a body that looks like chunked framing under Content-Length",
             post("/a9", "Content-Length: 5\r\n", "0\r\n\r\n"), cl5, "0\r\n\r\n", "0\r\n\r\n"),
        ]
        for (label, raw, framing, rawBody, body) in cases {
            let before = origin.requests.count
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            try c.send(raw)
            let path = requestPath(raw)
            let r = try c.readResponse()
            #expect(r.status == 200, "\(label): \(r.status) \(r.text)")
            #expect(r.text == "POST \(path) HTTP/1.1", "\(label): the answer is the backend's answer to this request")
            let seen = Array(origin.requests.dropFirst(before))
            #expect(seen.count == 1, "\(label): the backend saw \(seen.map(\.line))")
            guard let req = seen.first else { continue }
            #expect(req.line == "POST \(path) HTTP/1.1", "\(label)")
            #expect(req.framingFields == [framing], "\(label): framing fields at the backend: \(req.framingFields)")
            #expect(req.rawBody == Array(rawBody.utf8), "\(label): body on the wire \(printable(req.rawBody))")
            #expect(req.body == Array(body.utf8), "\(label): decoded body \(printable(req.body))")
        }
        #expect(origin.connections.allSatisfy { $0.leftover.isEmpty && $0.problem == nil },
                "the backend has no bytes outside the requests it framed: \(origin.connections.map { printable($0.leftover) })")
    }

    @Test func cutsTheBackendRequestShortWhenChunkFramingBreaksAfterTheFirstChunk() throws {
        let origin = ByteRecordingOrigin()
        defer { origin.stop() }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let cases: [(String, String)] = [
            ("a bare LF after the chunk size", "5\nworld\r\n0\r\n\r\n"),
            ("a bare LF after the chunk data", "5\r\nworld\n0\r\n\r\n"),
            ("a bare LF after the last-chunk size", "0\n\r\n"),
            ("a bare LF ending the chunked body", "0\r\n\n"),
            ("a bare LF ending a trailer field", "0\r\nX-T: 1\n\r\n"),
            ("a bare CR after the chunk size", "5\rworld\r\n0\r\n\r\n"),
            ("a chunk size of 16 hex digits", "ffffffffffffffff\r\nworld\r\n0\r\n\r\n"),
            ("a chunk size past 2^64 (wraps to 5)", "10000000000000005\r\nworld\r\n0\r\n\r\n"),
            ("a chunk size with 0x", "0x5\r\nworld\r\n0\r\n\r\n"),
            ("a negative chunk size", "-5\r\nworld\r\n0\r\n\r\n"),
            ("a chunk size with a plus sign", "+5\r\nworld\r\n0\r\n\r\n"),
            ("whitespace before the chunk size", " 5\r\nworld\r\n0\r\n\r\n"),
            ("an empty chunk size", "\r\nworld\r\n0\r\n\r\n"),
            ("chunk data longer than its size", "3\r\nworld\r\n0\r\n\r\n"),
            ("chunk data shorter than its size", "7\r\nworld\r\n0\r\n\r\n"),
            ("a request line in the trailer section", "0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("obs-fold in the trailer section", "0\r\nX-T: 1\r\n folded\r\n\r\n"),
            ("a chunk extension longer than the chunk-line limit", "5;" + String(repeating: "e", count: 5000) + "\r\nworld\r\n0\r\n\r\n"),
            ("a quoted chunk extension hiding CRLF", "5;x=\"a\r\n0\r\n\r\n\"\r\nworld\r\n0\r\n\r\n"),
        ]
        for (i, (label, rest)) in cases.enumerated() {
            // Streamed: the head and a first good chunk are at the backend before the bad framing
            // arrives, so the backend holds an unfinished request that must never be completed.
            let path = "/streamed-\(i)"
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            try c.send("POST \(path) HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            #expect(eventually { origin.bodyBytes(afterHeadOf: path).map { $0 == Array("5\r\nhello\r\n".utf8) } ?? false },
                    "\(label): the first chunk reached the backend")
            try c.send(rest)
            try expectRefusal(c, statuses: [400], label)
            #expect(eventually { origin.connection(carrying: path)?.ended ?? false },
                    "\(label): the proxy closes the backend connection holding the unfinished request")
            let after = origin.bodyBytes(afterHeadOf: path) ?? []
            #expect(after == Array("5\r\nhello\r\n".utf8),
                    "\(label): nothing after the first chunk reaches the backend, got \(printable(after))")

            // In one piece: nothing of the request becomes a complete request at the backend.
            let whole = "/whole-\(i)"
            try expectRefused(proxy.port, "POST \(whole) HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + rest,
                              statuses: [400], "\(label), sent at once")
        }
        try expectBackendSawOnlyABarrierRequest(proxy.port, origin)
    }

    @Test func theBackendSeesExactlyTheRequestsTheProxyAnsweredWhenABodyHidesARequest() throws {
        let origin = ByteRecordingOrigin()
        defer { origin.stop() }
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let hidden = "GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n"
        let next = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        let fakeEnd = "0\r\n\r\n" + hidden
        // (label, bytes sent at once, the requests (line, decoded body) the backend must see)
        let cases: [(String, String, [(String, String)])] = [
            ("a Content-Length body that is a whole request",
             post("/a", "Content-Length: \(hidden.utf8.count)\r\n", hidden) + next,
             [("POST /a HTTP/1.1", hidden), ("GET /b HTTP/1.1", "")]),
            ("a GET with a Content-Length body that is a whole request (CL.0 shape)",
             "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: \(hidden.utf8.count)\r\n\r\n" + hidden + next,
             [("GET /a HTTP/1.1", hidden), ("GET /b HTTP/1.1", "")]),
            ("chunk data that looks like a last chunk and a request",
             post("/a", "Transfer-Encoding: chunked\r\n", String(fakeEnd.utf8.count, radix: 16) + "\r\n" + fakeEnd + "\r\n0\r\n\r\n") + next,
             [("POST /a HTTP/1.1", fakeEnd), ("GET /b HTTP/1.1", "")]),
            ("a tab-separated chunked whose body is only the last chunk",
             post("/a", "Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n") + next,
             [("POST /a HTTP/1.1", ""), ("GET /b HTTP/1.1", "")]),
            ("bare LF line ends in the heads",
             "POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhelloGET /b HTTP/1.1\nHost: x\n\n",
             [("POST /a HTTP/1.1", "hello"), ("GET /b HTTP/1.1", "")]),
            ("mixed CRLF and bare LF ending the heads",
             "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\nhelloGET /b HTTP/1.1\r\nHost: x\n\r\n",
             [("POST /a HTTP/1.1", "hello"), ("GET /b HTTP/1.1", "")]),
            ("a stray CRLF after a body",
             post("/a", "Content-Length: 5\r\n", "hello") + "\r\n" + next,
             [("POST /a HTTP/1.1", "hello"), ("GET /b HTTP/1.1", "")]),
            ("three pipelined requests with chunked in the middle",
             post("/a", "Content-Length: 1\r\n", "x") + post("/c", "Transfer-Encoding: chunked\r\n", "3\r\nGET\r\n0\r\n\r\n") + next,
             [("POST /a HTTP/1.1", "x"), ("POST /c HTTP/1.1", "GET"), ("GET /b HTTP/1.1", "")]),
        ]
        for (label, raw, expected) in cases {
            let before = origin.requests.count
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            try c.send(raw)
            var answered: [String] = []
            for _ in expected {
                let r = try c.readResponse()
                #expect(r.status == 200, "\(label): \(r.status) \(r.text)")
                answered.append(r.text)
            }
            // The connection is still in step: one more request gets its own answer.
            let end = try c.request("GET", "/end")
            #expect(end.text == "GET /end HTTP/1.1", "\(label): \(end.text)")
            let seen = Array(origin.requests.dropFirst(before))
            #expect(answered == expected.map(\.0), "\(label): the client got answers to \(answered)")
            #expect(seen.map(\.line) == expected.map(\.0) + ["GET /end HTTP/1.1"],
                    "\(label): the backend saw \(seen.map(\.line))")
            for (req, exp) in zip(seen, expected) {
                #expect(req.body == Array(exp.1.utf8), "\(label): body of \(req.line) at the backend: \(printable(req.body))")
                #expect(req.framingFields.count <= 1, "\(label): \(req.framingFields)")
            }
        }
        #expect(origin.connections.allSatisfy { $0.leftover.isEmpty && $0.problem == nil },
                "the backend has no bytes outside the requests it framed")
    }

    // MARK: - 2. Upstream response violations

    @Test func answers502ForAMalformedResponseAndNeverReusesThatUpstreamConnection() throws {
        let cases: [(String, String)] = [
            ("two different Content-Length fields", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            ("a Content-Length list with different values", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
            ("Content-Length with Transfer-Encoding",
             "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("Transfer-Encoding with Content-Length",
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("a signed Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
            ("an unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\nhello"),
            ("chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("Transfer-Encoding in an HTTP/1.0 response", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("whitespace before a colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
            ("obs-fold", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Folded: a\r\n b\r\n\r\nhello"),
            ("a header line without a colon", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nNoColonHere\r\n\r\nhello"),
            ("a bare CR in a header", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 5\r\n\r\nhello"),
            ("a letter O in the status code", "HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("a two-digit status code", "HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("a status code below 100", "HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhello"),
            ("no space after the version", "HTTP/1.1200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("no space before the reason", "HTTP/1.1 200OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("a misspelt protocol", "HTPT/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("an ICY status line", "ICY 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("HTTP/2.0 in the status line", "HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("a leading empty line", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("a 101 nobody asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"),
        ]
        var scripts: [String: UpstreamScript] = [:]
        for (i, c) in cases.enumerated() { scripts["/bad/\(i)"] = UpstreamScript(c.1) }
        let (origin, ledger) = violatingOrigin(scripts)
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        for (i, (label, _)) in cases.enumerated() {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            let r = try c.request("GET", "/bad/\(i)")
            #expect(r.status == 502, "\(label): \(r.status) \(r.text)")
            // The same client connection stays in step, and its next request goes on a new
            // upstream connection.
            let good = try c.request("GET", "/good/\(i)")
            #expect(good.status == 200 && good.text == "/good/\(i)", "\(label): next answer \(good.status) \(good.text)")
            #expect(ledger.requestNumber(of: "/good/\(i)") == 1, "\(label): the next request went on a fresh upstream connection")
        }
        #expect(ledger.reusedAfterViolation.isEmpty, "requests sent on a spoiled connection: \(ledger.reusedAfterViolation)")
    }

    @Test func neverReusesAnUpstreamConnectionThatSentBytesBeyondItsResponse() throws {
        let forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
        // (label, method, script, statuses the client may see, the declared body a 2xx must carry)
        let cases: [(String, String, UpstreamScript, Set<Int>, String)] = [
            ("bytes beyond Content-Length", "GET",
             UpstreamScript("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood" + forged), [200, 502], "good"),
            ("bytes beyond the last chunk", "GET",
             UpstreamScript("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\n0\r\n\r\n" + forged), [200, 502], "good"),
            ("a response after a 204", "GET", UpstreamScript("HTTP/1.1 204 No Content\r\n\r\n" + forged), [204, 502], ""),
            ("a body on a 204 that claims a Content-Length", "GET",
             UpstreamScript("HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\nforged" + forged), [204, 502], ""),
            ("a body on a 304", "GET", UpstreamScript("HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\nforged" + forged), [304, 502], ""),
            ("a body after a HEAD response", "HEAD", UpstreamScript("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged" + forged), [200, 502], ""),
            ("a chunked body after a HEAD response", "HEAD",
             UpstreamScript("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nforged\r\n0\r\n\r\n" + forged), [200, 502], ""),
            ("extra bytes after a 100 Continue and the final response", "GET",
             UpstreamScript("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood" + forged), [200, 502], "good"),
            ("bytes after a Content-Length: 0 response", "GET",
             UpstreamScript("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + forged), [200, 502], ""),
            ("a response sent while the connection is idle in the pool", "GET",
             UpstreamScript("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood", late: forged), [200], "good"),
        ]
        var scripts: [String: UpstreamScript] = [:]
        for (i, c) in cases.enumerated() { scripts["/bad/\(i)"] = c.2 }  // by path
        let (origin, ledger) = violatingOrigin(scripts)
        // One worker: the pool (and so the connection count) is per worker.
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000), workers: 1)
        // Control: a well-behaved connection is reused, and the ledger sees it.
        do {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            #expect(try c.request("GET", "/control/1").text == "/control/1")
            #expect(try c.request("GET", "/control/2").text == "/control/2")
            #expect(ledger.requestNumber(of: "/control/2") == 2, "a clean upstream connection is pooled and reused")
        }
        for (i, (label, method, script, statuses, declared)) in cases.enumerated() {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            let r = try c.request(method, "/bad/\(i)")
            #expect(statuses.contains(r.status), "\(label): \(r.status) \(r.text)")
            if r.status < 300 { #expect(r.text == declared, "\(label): only the declared body: \(r.text)") }
            if script.late != nil { usleep(600_000) }  // the late bytes arrive while the connection is pooled
            let good = try c.request("GET", "/good/\(i)")
            #expect(good.status == 200 && good.text == "/good/\(i)", "\(label): next answer \(good.status) \(good.text)")
            #expect(ledger.requestNumber(of: "/good/\(i)") == 1, "\(label): the next request went on a fresh upstream connection")
            #expect(origin.connections == i + 2, "\(label): upstream connections so far: \(origin.connections)")  // control's + 1 per case
        }
        #expect(ledger.reusedAfterViolation.isEmpty, "requests sent on a spoiled connection: \(ledger.reusedAfterViolation)")
    }

    /// RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204. The proxy passes the backend's
    /// through, so a client that honours it waits for body bytes that never come (or eats the next
    /// response's first bytes).
    @Test func doesNotPassAContentLengthOnA204ToTheClient() throws {
        let (origin, _) = violatingOrigin(["/bad/204": UpstreamScript("HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\n")])
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        let r = try c.request("GET", "/bad/204")
        #expect(r.status == 204)
        #expect(r.header("Content-Length") == nil, "a 204 to the client carries Content-Length: \(r.header("Content-Length") ?? "")")
    }

    @Test func answers502WhenTheFirstResponseBytesBreakChunkFraming() throws {
        let (origin, ledger) = violatingOrigin([
            "/bad/at-once": UpstreamScript("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\nzz\r\nforged\r\n0\r\n\r\n"),
        ])
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        try c.send("GET /bad/at-once HTTP/1.1\r\nHost: x\r\n\r\n")
        let start = Date()
        let r = try? c.readResponse()
        #expect(r != nil || c.closedByPeer, "the client is not left hanging")
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(!(r?.text.contains("forged") ?? false))
        // Head and broken chunk came in one read: nothing has gone to the client yet, so per
        // DESIGN.md §4 and the README ("502 if no response byte was sent yet") it is owed a 502.
        #expect(r?.status == 502, "the client got \(r.map { "\($0.status) \($0.text)" } ?? "no response, connection closed")")
        let next = try TestConnection(port: proxy.port, timeoutSeconds: 5).request("GET", "/good/1")
        #expect(next.text == "/good/1")
        #expect(ledger.requestNumber(of: "/good/1") == 1)
        #expect(ledger.reusedAfterViolation.isEmpty)
    }

    @Test func cutsTheClientOffWhenAStreamingResponseBreaksChunkFramingMidBody() throws {
        let (origin, ledger) = violatingOrigin([
            "/bad/later": UpstreamScript("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\n",
                                         late: "zz\r\nforged\r\n0\r\n\r\n" + "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"),
        ])
        let proxy = try startProxy(config: proxyConfig(backends: [origin.port], intervalMs: 60000))
        let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
        try c.send("GET /bad/later HTTP/1.1\r\nHost: x\r\n\r\n")
        let start = Date()
        let raw = String(decoding: c.readToEnd(), as: UTF8.self)
        #expect(raw.hasPrefix("HTTP/1.1 200"), "the head went out before the framing broke: \(raw)")
        #expect(raw.contains("good"))
        #expect(!raw.contains("forged"), "no byte after the broken chunk reaches the client: \(raw)")
        #expect(!raw.hasSuffix("0\r\n\r\n"), "the body must not look complete: \(raw)")
        #expect(c.closedByPeer && Date().timeIntervalSince(start) < 3, "the client sees the connection cut, not a hang")
        let next = try TestConnection(port: proxy.port, timeoutSeconds: 5).request("GET", "/good/1")
        #expect(next.text == "/good/1")
        #expect(ledger.requestNumber(of: "/good/1") == 1)
        #expect(ledger.reusedAfterViolation.isEmpty)
    }

    // MARK: - 3. Faults

    @Test func survivesClientsAbortingMidUploadAndMidDownloadWithoutLeakingDescriptors() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: faultConfig([backend.port]))
        let baseline = try warmUpAndMeasureDescriptors(proxy)
        for reset in [false, true] {
            let how = reset ? "reset" : "close"
            do {
                let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
                try c.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
                try c.send([UInt8](repeating: 0x61, count: 256 * 1024))
                #expect(eventually { activeUpstreams(proxy.port) == 1 }, "upload (\(how)) is in flight")
                if reset { c.resetOnClose() }
            }
            #expect(eventually { activeUpstreams(proxy.port) == 0 }, "upload aborted with \(how): backend connection released")
            do {
                let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
                try c.send("GET /stream?bytes=500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                var got = 0
                for _ in 0..<1000 where got < 1_000_000 { guard c.fill() else { break }; got = c.buffered.count }
                #expect(got >= 1_000_000, "download (\(how)) is in flight")
                if reset { c.resetOnClose() }
            }
            #expect(eventually { activeUpstreams(proxy.port) == 0 }, "download aborted with \(how): backend connection released")
            #expect(try get(proxy.port, "/after-\(how)").status == 200)
        }
        #expect(eventually { proxy.openFDs <= baseline }, "descriptors \(describeFDs(proxy)), baseline \(baseline)")
        #expect(proxy.process.isRunning)
    }

    @Test func cutsTheDownloadShortWhenTheBackendIsKilledMidResponseAndKeepsServing() throws {
        let victim = try startBackend(), healthy = try startBackend()
        let proxy = try startProxy(config: faultConfig([victim.port, healthy.port]))
        let baseline = try warmUpAndMeasureDescriptors(proxy, requests: 2)
        let total = 2_000_000_000
        // Round robin: within two downloads one goes to the victim (b1).
        var download: TestConnection?
        for _ in 0..<3 where download == nil {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            try c.send("GET /stream?bytes=\(total) HTTP/1.1\r\nHost: x\r\n\r\n")
            guard c.fill() else { continue }
            if activeByBackend(proxy.port)["b1"] == 1 { download = c }
        }
        let c = try #require(download, "a download from the victim")
        victim.signal(SIGKILL)
        #expect(victim.waitForExit(seconds: 5) != nil)
        let start = Date()
        // Reads until EOF, or until 5 s pass without a byte (a hang).
        let received = c.readToEnd().count
        #expect(c.closedByPeer, "the client sees the connection end, not a 5 s silence")
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(received < total, "the body is cut short: \(received) of \(total)")
        for i in 0..<4 {
            let r = try get(proxy.port, "/after/\(i)")
            #expect(r.status == 200, "request \(i) after the kill: \(r.status) \(r.text)")
            #expect(r.json["backend"] as? String == "backend-\(healthy.port)")
        }
        #expect(eventually { proxy.openFDs <= baseline }, "descriptors \(describeFDs(proxy)), baseline \(baseline)")
    }

    @Test func answers502WhenTheBackendResetsBeforeAnyResponseByteAndKeepsServing() throws {
        let origin = ScriptedOrigin { conn, head in
            let path = requestPath(head)
            if path.hasPrefix("/reset") {
                conn.reset()
                return .close
            }
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(path.utf8.count)\r\n\r\n\(path)")
            return .keepReading
        }
        let proxy = try startProxy(config: faultConfig([origin.port]))
        let baseline = try warmUpAndMeasureDescriptors(proxy)
        // A fresh upstream connection, a POST with a body, and a pooled connection (GET: retried once).
        let fresh = try TestConnection(port: proxy.port, timeoutSeconds: 5).request("GET", "/reset/fresh")
        #expect(fresh.status == 502, "\(fresh.status) \(fresh.text)")
        let upload = try TestConnection(port: proxy.port, timeoutSeconds: 5).request("POST", "/reset/post", body: Array(repeating: 0x62, count: 1000))
        #expect(upload.status == 502, "\(upload.status) \(upload.text)")
        do {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 5)
            #expect(try c.request("GET", "/ok/1").text == "/ok/1")
            let pooled = try c.request("GET", "/reset/pooled")
            #expect(pooled.status == 502, "\(pooled.status) \(pooled.text)")
            #expect(try c.request("GET", "/ok/2").text == "/ok/2", "the client connection is still in step")
        }  // closed here: its descriptor in the proxy must go too
        #expect(origin.requests.filter { $0.hasPrefix("POST /reset") }.count == 1, "a POST is never replayed")
        #expect(origin.requests.filter { $0.hasPrefix("GET /reset/pooled") }.count <= 2, "retried at most once")
        #expect(try get(proxy.port, "/ok/3").status == 200)
        #expect(eventually { proxy.openFDs <= baseline }, "descriptors \(describeFDs(proxy)), baseline \(baseline)")
    }

    // MARK: - 4. Slowloris

    @Test func slowlorisConnectionsNeitherDelayOtherClientsNorOutliveTheHeaderTimeout() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],"health_check":{"interval_ms":60000},
             "timeouts":{"client_header_ms":2000},"pool":{"idle_timeout_ms":200}}
            """)
        let baseline = try warmUpAndMeasureDescriptors(proxy)
        let opened = Date()
        var slow: [TestConnection] = []
        for i in 0..<200 {
            let c = try TestConnection(port: proxy.port, timeoutSeconds: 6)
            try c.send("GET /slow/\(i) HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(c)
        }
        #expect(eventually { proxy.openFDs >= baseline + 200 }, "the proxy holds the slow connections")
        var slowest = 0.0
        for i in 0..<50 {
            let start = Date()
            let r = try TestConnection(port: proxy.port, timeoutSeconds: 5).request("GET", "/normal/\(i)")
            let took = Date().timeIntervalSince(start)
            slowest = max(slowest, took)
            #expect(r.status == 200, "normal request \(i): \(r.status)")
            #expect(took < 1, "normal request \(i) took \(took) s")
        }
        print("slowloris: slowest of 50 normal requests \(slowest) s")
        // One more header line on every slow connection: the deadline is for the whole head, so a
        // trickle of bytes must not extend it.
        let trickled = Date().timeIntervalSince(opened) < 1.5
        if trickled { for c in slow { try? c.send("a\r\nX-More: b") } }
        // Every slow connection gets a 408 (or is closed) within 6 s of opening; reads are bounded by that.
        let deadline = opened.addingTimeInterval(6)
        var answered408 = 0, closedSilently = 0, stillOpen = 0
        for c in slow {
            let left = max(deadline.timeIntervalSinceNow, 0.1)
            c.setTimeout(seconds: Int(left), microseconds: Int((left - left.rounded(.down)) * 1_000_000))
            let r = try? c.readResponse()
            if let r { #expect(r.status == 408, "slow connection answered \(r.status)") }
            if r != nil { _ = c.readToEnd() }
            if !c.closedByPeer { stillOpen += 1 } else if r?.status == 408 { answered408 += 1 } else { closedSilently += 1 }
        }
        let allClosedAfter = Date().timeIntervalSince(opened)
        #expect(stillOpen == 0, "\(stillOpen) slow connections still open")
        #expect(answered408 + closedSilently == 200, "408: \(answered408), closed silently: \(closedSilently)")
        #expect(allClosedAfter > 1.0, "closed after \(allClosedAfter) s, before the 2 s header timeout")
        if trickled { #expect(allClosedAfter < 3.2, "closed after \(allClosedAfter) s: the trickle extended the deadline") }
        print("slowloris: 200 slow connections closed \(allClosedAfter) s after opening (408: \(answered408))")
        slow.removeAll()
        #expect(eventually { proxy.openFDs <= baseline }, "descriptors \(describeFDs(proxy)), baseline \(baseline)")
        #expect(try get(proxy.port, "/after").status == 200)
    }
}

// MARK: - Helpers

/// `POST path HTTP/1.1` with `Host: x`, the given field lines (each ending in CRLF) and body.
private func post(_ path: String, _ fieldLines: String, _ body: String) -> String {
    "POST \(path) HTTP/1.1\r\nHost: x\r\n\(fieldLines)\r\n\(body)"
}

/// The target of the request line at the start of `raw`.
private func requestPath(_ raw: String) -> String {
    let line = raw.prefix { $0 != "\r" && $0 != "\n" }
    let parts = line.split(separator: " ")
    return parts.count > 1 ? String(parts[1]) : ""
}

/// Bytes as text with CR, LF and other control bytes made visible.
private func printable(_ bytes: [UInt8]) -> String {
    var s = ""
    for b in bytes.prefix(300) {
        switch b {
        case 13: s += "\\r"
        case 10: s += "\\n"
        case 9: s += "\\t"
        case 0x20..<0x7F: s.append(Character(UnicodeScalar(b)))
        default: s += String(format: "\\x%02x", b)
        }
    }
    return bytes.count > 300 ? s + "…(\(bytes.count) bytes)" : s
}

/// Sends `raw` on a fresh connection and expects a refusal.
private func expectRefused(_ port: UInt16, _ raw: String, statuses: Set<Int>, _ label: String) throws {
    let c = try TestConnection(port: port, timeoutSeconds: 5)
    try c.send(raw)
    try expectRefusal(c, statuses: statuses, label)
}

/// The next response on `c` is one of `statuses` with `Connection: close`, and nothing follows it:
/// the proxy closes the connection (no second response to a smuggled request).
private func expectRefusal(_ c: TestConnection, statuses: Set<Int>, _ label: String) throws {
    let r: HTTPResponse
    do { r = try c.readResponse() } catch {
        Issue.record("\(label): no response: \(error)")
        return
    }
    #expect(statuses.contains(r.status), "\(label): got \(r.status) \(r.text)")
    #expect(r.header("Connection")?.lowercased() == "close", "\(label): Connection \(r.header("Connection") ?? "-")")
    let after = c.readToEnd()
    #expect(after.isEmpty, "\(label): bytes after the refusal: \(printable(after))")
    #expect(c.closedByPeer, "\(label): the connection is closed")
}

/// After refused requests: a normal request still goes through, and it is the only complete request
/// the backend ever saw; every other backend connection was closed without a complete request.
private func expectBackendSawOnlyABarrierRequest(_ port: UInt16, _ origin: ByteRecordingOrigin) throws {
    let r = try TestConnection(port: port, timeoutSeconds: 5).request("GET", "/barrier")
    #expect(r.status == 200)
    #expect(r.text == "GET /barrier HTTP/1.1")
    #expect(origin.requests.map(\.line) == ["GET /barrier HTTP/1.1"], "complete requests at the backend: \(origin.requests.map(\.line))")
    #expect(eventually {
        origin.connections.allSatisfy { $0.ended || $0.requests.map(\.line) == ["GET /barrier HTTP/1.1"] }
    }, "every other backend connection was closed")
    #expect(origin.connections.allSatisfy { $0.problem == nil }, "\(origin.connections.compactMap(\.problem))")
}

/// Config for the fault tests: no periodic probes (no descriptor noise), a short pool idle timeout.
private func faultConfig(_ ports: [UInt16]) -> String {
    proxyConfig(backends: ports, intervalMs: 60000, extra: ",\"pool\":{\"idle_timeout_ms\":200}")
}

/// Sends a few requests so that everything the proxy opens lazily is open, waits until pooled
/// connections have idled out, and returns the descriptor count then.
private func warmUpAndMeasureDescriptors(_ proxy: ManagedProcess, requests: Int = 1) throws -> Int {
    for i in 0..<requests { #expect(try get(proxy.port, "/warm-up/\(i)").status == 200) }
    #expect(try get(proxy.port, "/_health").status == 200)
    #expect(eventually { idlePooled(proxy.port) == 0 }, "the pool idles out")
    usleep(300_000)
    var samples: [Int] = []
    for _ in 0..<5 { samples.append(proxy.openFDs); usleep(50_000) }
    return samples.min() ?? -1
}

/// The proxy's open descriptors and what they are, for failure messages.
private func describeFDs(_ proxy: ManagedProcess) -> String {
    let dir = "/proc/\(proxy.pid)/fd"
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }
    let targets = names.map { "\($0)→" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\($0)")) ?? "?") }
    return "\(names.count): " + targets.joined(separator: " ")
}

private func healthBackends(_ port: UInt16) -> [[String: Any]] {
    (try? TestConnection(port: port, timeoutSeconds: 5).request("GET", "/_health"))?.json["backends"] as? [[String: Any]] ?? []
}

/// Sum of `active_connections` over the backends (-1 when /_health did not answer).
private func activeUpstreams(_ port: UInt16) -> Int {
    let list = healthBackends(port)
    return list.isEmpty ? -1 : list.reduce(0) { $0 + ($1["active_connections"] as? Int ?? 0) }
}

private func idlePooled(_ port: UInt16) -> Int {
    let list = healthBackends(port)
    return list.isEmpty ? -1 : list.reduce(0) { $0 + ($1["idle_pooled_connections"] as? Int ?? 0) }
}

private func activeByBackend(_ port: UInt16) -> [String: Int] {
    var out: [String: Int] = [:]
    for b in healthBackends(port) { if let id = b["id"] as? String { out[id] = b["active_connections"] as? Int } }
    return out
}

private extension TestConnection {
    /// Makes the coming close send RST instead of FIN (an abrupt client abort).
    func resetOnClose() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    }
}

// MARK: - A scripted origin that sends broken responses and notices reuse

/// What a scripted origin sends for one path: `first` at once, `late` 200 ms later.
private struct UpstreamScript: Sendable {
    var first: String
    var late: String?
    init(_ first: String, late: String? = nil) { self.first = first; self.late = late }
}

/// Which upstream connections got a broken response, and any request that came on one afterwards.
private final class ViolationLedger: @unchecked Sendable {
    private let lock = NSLock()
    private var spoiled = Set<ObjectIdentifier>()
    private var reused: [String] = []
    private var numbers: [String: Int] = [:]

    /// A request for `path` arrived as request number `number` of its connection.
    func arrived(_ conn: ScriptedOrigin.Connection, path: String) {
        let id = ObjectIdentifier(conn)
        lock.lock(); defer { lock.unlock() }
        if conn.requestCount == 1 { spoiled.remove(id) }  // a new connection (the identifier may be recycled)
        if spoiled.contains(id) { reused.append(path) }
        numbers[path] = conn.requestCount
    }

    func spoil(_ conn: ScriptedOrigin.Connection) {
        lock.lock(); spoiled.insert(ObjectIdentifier(conn)); lock.unlock()
    }

    /// Paths requested on a connection after it sent a broken response.
    var reusedAfterViolation: [String] { lock.lock(); defer { lock.unlock() }; return reused }

    /// Which request of its upstream connection `path` was (1: the connection was fresh).
    func requestNumber(of path: String) -> Int? { lock.lock(); defer { lock.unlock() }; return numbers[path] }
}

/// Paths in `scripts` get their scripted (broken) bytes; any other path gets `200` whose body is
/// the path. Connections are kept open after every response, so reuse is possible and recorded.
private func violatingOrigin(_ scripts: [String: UpstreamScript]) -> (ScriptedOrigin, ViolationLedger) {
    let ledger = ViolationLedger()
    let origin = ScriptedOrigin { conn, head in
        let path = requestPath(head)
        ledger.arrived(conn, path: path)
        if let script = scripts[path] {
            ledger.spoil(conn)
            conn.send(script.first)
            if let late = script.late {
                usleep(200_000)
                conn.send(late)
            }
            return .keepReading
        }
        conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(path.utf8.count)\r\n\r\n\(path)")
        return .keepReading
    }
    return (origin, ledger)
}

// MARK: - An origin that records exact bytes

/// An origin that keeps every byte each connection carried, frames requests with its own small
/// parser (independent of the proxy's: CRLF line ends, one `Content-Length` of digits or
/// `Transfer-Encoding: chunked`), and answers each complete request with `200` whose body is the
/// request line. Health probes (`GET /health`) get a 200 and are not recorded.
private final class ByteRecordingOrigin: @unchecked Sendable {
    struct Request {
        var line: String
        /// Field lines as `lower-case-name: value`.
        var fields: [String]
        /// The body as framed on the wire (chunk lines included).
        var rawBody: [UInt8]
        /// The body with chunked framing removed.
        var body: [UInt8]
        var framingFields: [String] {
            fields.filter { $0.hasPrefix("content-length:") || $0.hasPrefix("transfer-encoding:") }
        }
    }

    struct Connection {
        var bytes: [UInt8] = []
        var requests: [Request] = []
        /// How many of `bytes` belong to complete requests.
        var framed = 0
        /// Why the origin's parser gave up on this connection, if it did.
        var problem: String?
        /// The proxy closed the connection.
        var ended = false
        var leftover: [UInt8] { Array(bytes[framed...]) }
    }

    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var connections: [Connection] = []
        var requests: [Request] = []
        var stopped = false
    }

    let port: UInt16
    private let listenFD: Int32
    private let state = State()

    init() {
        (listenFD, port) = listenOnLoopback()
        let fd = listenFD, shared = state
        Thread {
            while true {
                let c = retryingOnEINTR { accept(fd, nil, nil) }
                if c < 0 {
                    if errno == ECONNABORTED { continue }
                    // Stopped (shutdown makes accept fail). Closed here, by the only thread that
                    // uses it, so the number cannot be reused under a pending accept.
                    close(fd)
                    return
                }
                Thread { ByteRecordingOrigin.serve(c, shared) }.start()
            }
        }.start()
    }

    /// Complete requests, in the order they were framed (health probes excluded).
    var requests: [Request] { state.lock.lock(); defer { state.lock.unlock() }; return state.requests }

    /// Connections that were not health probes, in the order their first line arrived.
    var connections: [Connection] { state.lock.lock(); defer { state.lock.unlock() }; return state.connections }

    /// The last connection whose bytes contain a request line for `path`.
    func connection(carrying path: String) -> Connection? {
        let needle = Array(" \(path) HTTP/1.1\r\n".utf8)
        return connections.last { $0.bytes.firstRange(of: needle) != nil }
    }

    /// The bytes after the head of the request for `path`, if its head arrived.
    func bodyBytes(afterHeadOf path: String) -> [UInt8]? {
        guard let conn = connection(carrying: path),
              let line = conn.bytes.firstRange(of: Array(" \(path) HTTP/1.1\r\n".utf8)),
              let end = conn.bytes[line.upperBound...].firstRange(of: [13, 10, 13, 10]) else { return nil }
        return Array(conn.bytes[end.upperBound...])
    }

    /// Stops accepting and ends every connection thread. Idempotent.
    func stop() {
        state.lock.lock()
        let first = !state.stopped
        state.stopped = true
        state.lock.unlock()
        guard first else { return }
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))  // wakes the accept thread, which closes it
    }

    deinit { stop() }

    private static func serve(_ fd: Int32, _ state: State) {
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 65536)
        var data: [UInt8] = []
        var slot: Int?
        var isProbe = false
        var framed = 0
        var broken = false
        func register() -> Int {
            state.lock.lock(); defer { state.lock.unlock() }
            state.connections.append(Connection())
            return state.connections.count - 1
        }
        while true {
            state.lock.lock(); let stopped = state.stopped; state.lock.unlock()
            if stopped { break }
            let n = retryingOnEINTR { buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            if n == 0 { break }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { continue }  // the receive timeout: look at `stopped`
                break
            }
            data.append(contentsOf: buf[0..<n])
            if slot == nil && !isProbe {
                guard let lf = data.firstIndex(of: 10) else { continue }
                if data[..<lf].starts(with: Array("GET /health ".utf8)) { isProbe = true } else { slot = register() }
            }
            if isProbe {
                if data.firstRange(of: [13, 10, 13, 10]) != nil {
                    sendAll(fd, Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
                    break
                }
                continue
            }
            var replies: [UInt8] = []
            state.lock.lock()
            state.connections[slot!].bytes.append(contentsOf: buf[0..<n])
            framing: while !broken {
                switch frameRequest(data, from: framed) {
                case .incomplete:
                    break framing
                case .invalid(let why):
                    state.connections[slot!].problem = why
                    broken = true
                case .complete(let request, let end):
                    framed = end
                    state.connections[slot!].framed = end
                    state.connections[slot!].requests.append(request)
                    state.requests.append(request)
                    replies += Array("HTTP/1.1 200 OK\r\nContent-Length: \(request.line.utf8.count)\r\n\r\n\(request.line)".utf8)
                }
            }
            state.lock.unlock()
            if !replies.isEmpty { sendAll(fd, replies) }
        }
        if slot == nil && !isProbe { slot = register() }
        if let slot, !isProbe {
            state.lock.lock()
            if state.connections[slot].bytes.count < data.count { state.connections[slot].bytes = data }
            state.connections[slot].ended = true
            state.lock.unlock()
        }
        close(fd)
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    enum Framing {
        case incomplete
        case invalid(String)
        case complete(Request, end: Int)
    }

    /// Frames one request starting at `start` the way a plain, strict origin would.
    static func frameRequest(_ b: [UInt8], from start: Int) -> Framing {
        guard start < b.count else { return .incomplete }
        guard let headEnd = b[start...].firstRange(of: [13, 10, 13, 10]) else { return .incomplete }
        let lines = String(decoding: b[start..<headEnd.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        var fields: [String] = []
        var lengths: [String] = [], codings: [String] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { return .invalid("field without a colon: \(line)") }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
            fields.append("\(name): \(value)")
            if name == "content-length" { lengths.append(value) }
            if name == "transfer-encoding" { codings.append(value.lowercased()) }
        }
        let bodyStart = headEnd.upperBound
        var i = bodyStart
        var body: [UInt8] = []
        if !codings.isEmpty {
            guard codings == ["chunked"], lengths.isEmpty else { return .invalid("framing \(fields)") }
            while true {
                guard let lineEnd = b[i...].firstRange(of: [13, 10]) else { return .incomplete }
                let sizeText = String(decoding: b[i..<lineEnd.lowerBound], as: UTF8.self)
                guard !sizeText.isEmpty, sizeText.count <= 15, sizeText.allSatisfy(\.isHexDigit),
                      let size = Int(sizeText, radix: 16) else { return .invalid("chunk size line \(sizeText)") }
                i = lineEnd.upperBound
                if size == 0 {
                    while true {  // trailer fields, then the empty line
                        guard let e = b[i...].firstRange(of: [13, 10]) else { return .incomplete }
                        let empty = e.lowerBound == i
                        i = e.upperBound
                        if empty { break }
                    }
                    break
                }
                guard b.count >= i + size + 2 else { return .incomplete }
                body += b[i..<(i + size)]
                guard b[i + size] == 13 && b[i + size + 1] == 10 else { return .invalid("no CRLF after chunk data") }
                i += size + 2
            }
        } else if let length = lengths.first {
            guard lengths.count == 1, !length.isEmpty, length.allSatisfy(\.isASCII), length.allSatisfy(\.isNumber),
                  let n = Int(length) else { return .invalid("Content-Length \(lengths)") }
            guard b.count >= i + n else { return .incomplete }
            body = Array(b[i..<(i + n)])
            i += n
        }
        let request = Request(line: lines.first ?? "", fields: fields, rawBody: Array(b[bodyStart..<i]), body: body)
        return .complete(request, end: i)
    }
}
