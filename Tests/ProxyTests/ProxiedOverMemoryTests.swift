import Testing
@testable import Proxy

/// Proxied exchanges with no sockets: the clients and the backends are `MemoryStream`s
/// (`MemoryWorker`), so the production connection and exchange run, and each test plays the
/// backend — reads what the proxy sent it, answers byte by byte or all at once, closes early,
/// stops reading. Covers relaying, re-framing, pooling, failover, the keep-alive race,
/// backpressure both ways and the tunnel (issue 12 §2).
private final class Proxied {
    let worker: MemoryWorker
    init(backends: Int = 1) throws {
        let list = (0..<backends).map { #"{"id":"b\#($0)","url":"http://127.0.0.1:\#(9000 + $0)"}"# }.joined(separator: ",")
        worker = try MemoryWorker(config: #"{"backends":[\#(list)],"access_log":null}"#)
    }
    /// A client that has sent `request`, with connects and deliveries run.
    func client(sending request: String) -> MemoryStream {
        let c = worker.connect()
        c.peerSends(request)
        worker.settle()
        return c
    }
    var upstreams: [MemoryStream] { worker.upstreams }

    /// A client whose first request was answered on `upstreams[0]` and whose second (`GET /2`)
    /// went out on that same, pooled connection, not answered yet.
    func secondRequestOnAPooledConnection() -> MemoryStream {
        let c = client(sending: "GET /1 HTTP/1.1\r\nHost: site\r\n\r\n")
        upstreams[0].peerSends(okResponse)
        c.peerSends("GET /2 HTTP/1.1\r\nHost: site\r\n\r\n")
        worker.settle()
        return c
    }
}

private let okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

/// What follows the first blank line (the body after a response head).
private func bodyAfterHead(_ bytes: [UInt8]) -> [UInt8] {
    let crlfcrlf: [UInt8] = [13, 10, 13, 10]
    guard bytes.count >= 4, let i = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<($0 + 4)]) == crlfcrlf }) else { return [] }
    return Array(bytes[(i + 4)...])
}

private func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

struct ProxiedOverMemoryTests {
    @Test func aRequestIsRewrittenForTheBackendAndItsConnectionIsPooledForTheNext() throws {
        let p = try Proxied()
        let c = p.client(sending: "GET /a HTTP/1.1\r\nHost: site\r\n\r\n")
        try #require(p.upstreams.count == 1)
        let backend = p.upstreams[0]
        #expect(backend.receivedText.hasPrefix("GET /a HTTP/1.1\r\n"))
        #expect(backend.receivedText.contains("X-Forwarded-For: 127.0.0.1\r\n"))
        #expect(backend.receivedText.contains("Host: site\r\n"))
        backend.peerSends(okResponse)
        #expect(c.receivedText.hasPrefix("HTTP/1.1 200 OK\r\n") && c.receivedText.hasSuffix("\r\n\r\nhello"))
        // The second request reuses the pooled connection: no new upstream.
        c.peerSends("GET /b HTTP/1.1\r\nHost: site\r\n\r\n")
        p.worker.settle()
        #expect(p.upstreams.count == 1)
        #expect(backend.receivedText.contains("GET /b HTTP/1.1\r\n"))
        backend.peerSends(okResponse)
        #expect(count("hello", in: c.receivedText) == 2)
    }

    @Test func clientTrafficIsCountedAfterEachExchangeNotOnlyWhenTheConnectionCloses() throws {
        let p = try Proxied()
        let c = p.client(sending: "GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        p.upstreams[0].peerSends(okResponse)
        let stats = p.worker.server.stats
        #expect(!c.isClosing)
        #expect(stats.load(WorkerStats.bytesSent) == UInt64(c.received.count))
        #expect(stats.load(WorkerStats.bytesReceived) == UInt64("GET / HTTP/1.1\r\nHost: site\r\n\r\n".utf8.count))
    }

    @Test func aHalfCloseBeforeAnyBodyByteEndsTheExchangeOnceTheUpstreamIsReady() throws {
        let p = try Proxied()
        let c = p.worker.connect()
        c.peerSends("POST / HTTP/1.1\r\nHost: site\r\nContent-Length: 10\r\n\r\n")
        c.peerEnds()
        p.worker.settle()  // the connect completes: the body can never come
        #expect(c.isClosing)
        #expect(p.upstreams[0].isClosing)
    }

    @Test func aChunkedResponseIsReframedChunkedFor11AndCloseDelimitedFor10() throws {
        for version in ["1.1", "1.0"] {
            let p = try Proxied()
            let c = p.client(sending: "GET / HTTP/\(version)\r\nHost: site\r\n\r\n")
            let backend = try #require(p.upstreams.first)
            // Byte by byte: the decoder and re-framing see every cut.
            for byte in "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n".utf8 {
                backend.peerSends([byte])
            }
            p.worker.settle()
            let text = c.receivedText
            let body = bodyAfterHead(c.received)
            var decoded: [UInt8] = []
            if version == "1.1" {
                #expect(text.contains("Transfer-Encoding: chunked"))
                var decoder = ChunkedDecoder()
                _ = try body.withUnsafeBytes { raw in try decoder.decode(raw) { decoded.append(contentsOf: $0) } }
                #expect(decoder.isComplete)
                #expect(!c.isClosing, "keep-alive")
            } else {
                #expect(!text.contains("chunked"))
                decoded = body
                #expect(c.sentEndOfOutput, "an HTTP/1.0 body without a length ends with the connection")
            }
            #expect(decoded == Array("abcde".utf8), "HTTP/\(version): \(text)")
        }
    }

    @Test func aChunkedRequestBodySentBeforeTheConnectGoesOutReframedBehindTheHead() throws {
        let p = try Proxied()
        let c = p.worker.connect()
        c.peerSends("POST /up HTTP/1.1\r\nHost: site\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n")
        let backend = try #require(p.upstreams.first)
        #expect(backend.received.isEmpty, "not connected yet")
        p.worker.settle()  // the connect completes
        c.peerSends("5\r\npedia\r\n0\r\n\r\n")
        p.worker.settle()
        let sent = backend.receivedText
        #expect(sent.hasPrefix("POST /up HTTP/1.1\r\n"))
        #expect(sent.hasSuffix("\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"), "\(sent)")
        backend.peerSends(okResponse)
        #expect(c.receivedText.hasSuffix("hello"))
    }

    @Test func aRefusedConnectFailsOverAndTheLastFailureIsA502Naming() throws {
        let p = try Proxied(backends: 2)
        p.worker.connectResult = UVError.connectionRefused
        let c = p.client(sending: "GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        #expect(p.upstreams.count == 2, "both backends tried")
        #expect(c.receivedText.hasPrefix("HTTP/1.1 502 "))
        #expect(c.receivedText.contains("cannot connect to backend"))
        // The next request tries again and gets through once a backend answers.
        p.worker.connectResult = 0
        c.peerSends("GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        p.worker.settle()
        try #require(p.upstreams.count == 3)
        p.upstreams[2].peerSends(okResponse)
        #expect(c.receivedText.hasSuffix("hello"))
    }

    @Test func aPooledConnectionThatClosesBeforeAnsweringIsRetriedOnANewOne() throws {
        let p = try Proxied()
        let c = p.secondRequestOnAPooledConnection()
        #expect(p.upstreams[0].receivedText.contains("GET /2 "), "sent on the pooled connection")
        p.upstreams[0].peerEnds()  // the keep-alive race: it closed without answering
        p.worker.settle()
        try #require(p.upstreams.count == 2)
        #expect(p.upstreams[1].receivedText.hasPrefix("GET /2 "))
        p.upstreams[1].peerSends(okResponse)
        #expect(count("hello", in: c.receivedText) == 2)
        #expect(!c.receivedText.contains(" 502 "))
    }

    @Test func aPooledConnectionThatSentA1xxThenClosedIsNotRetried() throws {
        let p = try Proxied()
        let c = p.secondRequestOnAPooledConnection()
        p.upstreams[0].peerSends("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        p.upstreams[0].peerEnds()
        p.worker.settle()
        #expect(p.upstreams.count == 1, "the backend had the request: not sent again")
        #expect(count("103 Early Hints", in: c.receivedText) == 1)
        #expect(c.receivedText.contains("HTTP/1.1 502 "))
    }

    @Test func aMalformedResponseIsA502AndThatConnectionIsNotReused() throws {
        let p = try Proxied()
        let c = p.client(sending: "GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        p.upstreams[0].peerSends("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
        #expect(c.receivedText.hasPrefix("HTTP/1.1 502 "))
        #expect(p.upstreams[0].isClosing)
    }

    /// Found by the response fuzz target: the 502 for a malformed head read the Keep-Alive field
    /// index of the previous response on that connection (index out of range: the worker died).
    @Test func aMalformedHeadAfterAResponseWithKeepAliveIsA502NotACrash() throws {
        let p = try Proxied()
        let c = p.client(sending: "GET /1 HTTP/1.1\r\nHost: site\r\n\r\n")
        p.upstreams[0].peerSends("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok")
        #expect(c.receivedText.hasSuffix("\r\n\r\nok"))
        c.peerSends("GET /2 HTTP/1.1\r\nHost: site\r\n\r\n")
        p.worker.settle()
        try #require(p.upstreams.count == 1)
        p.upstreams[0].peerSends("HTTP/1.1 200th: 2\n\nok")
        let second = c.receivedText.components(separatedBy: "HTTP/1.1 ").last ?? ""
        #expect(second.hasPrefix("502 ") && second.contains("malformed response head"), "\(second)")
        #expect(p.upstreams[0].isClosing)
    }

    @Test func aSlowClientPausesTheBackendAndTheBodyArrivesWhole() throws {
        let p = try Proxied()
        let c = p.worker.connect()
        c.highWater = 1000
        c.lowWater = 100
        c.peerIsReading = false
        c.peerSends("GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        p.worker.settle()
        let backend = p.upstreams[0]
        let body = (0..<20_000).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        backend.peerSends(Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body[..<2000])
        #expect(backend.isReadPaused, "the client's queue is past its high-water mark: the backend is not read")
        backend.peerSends(Array(body[2000...]))
        #expect(backend.heldInputBytes == body.count - 2000, "held, not buffered in the proxy")
        while c.queued.count > 0 || backend.heldInputBytes > 0 {
            c.peerReads()
            p.worker.settle()
        }
        #expect(Array(c.received.suffix(body.count)) == body)
    }

    @Test func aBackendThatDoesNotReadPausesTheClientsBody() throws {
        let p = try Proxied()
        let c = p.worker.connect()
        c.peerSends("POST / HTTP/1.1\r\nHost: site\r\nContent-Length: 100000\r\n\r\n")
        p.worker.settle()
        let backend = p.upstreams[0]
        backend.highWater = 1000
        backend.lowWater = 100
        backend.peerIsReading = false
        c.peerSends([UInt8](repeating: 0x61, count: 5000))
        #expect(c.isReadPaused, "the backend's queue is full: the client is not read")
        c.peerSends([UInt8](repeating: 0x62, count: 95000))
        #expect(c.heldInputBytes == 95000)
        while backend.queued.count > 0 || c.heldInputBytes > 0 {
            backend.peerReads()
            p.worker.settle()
        }
        let sent = backend.receivedText
        #expect(sent.hasSuffix(String(repeating: "a", count: 5000) + String(repeating: "b", count: 95000)))
    }

    @Test func pipelinedRequestsAreProxiedOneAfterTheOtherInOrder() throws {
        let p = try Proxied()
        let c = p.client(sending: (1...3).map { "GET /\($0) HTTP/1.1\r\nHost: site\r\n\r\n" }.joined())
        let backend = p.upstreams[0]
        for i in 1...3 {
            #expect(count("GET /", in: backend.receivedText) == i, "request \(i) goes out only once \(i - 1) is answered")
            backend.peerSends("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr\(i)")
            p.worker.settle()
        }
        let bodies = c.receivedText.components(separatedBy: "\r\n\r\n").dropFirst().map { String($0.prefix(2)) }
        #expect(bodies == ["r1", "r2", "r3"])
    }

    @Test func a101JoinsClientAndBackendBothWays() throws {
        let p = try Proxied()
        let c = p.client(sending: "GET /ws HTTP/1.1\r\nHost: site\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        let backend = p.upstreams[0]
        #expect(backend.receivedText.contains("Upgrade: websocket"))
        backend.peerSends("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfrom-backend")
        #expect(c.receivedText.hasPrefix("HTTP/1.1 101 ") && c.receivedText.hasSuffix("from-backend"))
        c.peerSends("from-client")
        #expect(backend.receivedText.hasSuffix("from-client"))
        backend.peerEnds()
        p.worker.settle()
        #expect(c.sentEndOfOutput, "the backend's FIN is passed on")
    }
}

/// A downstream that is not HTTP/1: it records what the exchange hands it — heads and de-framed
/// body bytes, the way an HTTP/2 stream will receive them (issue 12 §2: "a response-sink interface
/// that an HTTP/2 stream can implement").
private final class RecordingDownstream: ExchangeDownstream {
    var events: [String] = []
    var body: [UInt8] = []
    var ended = false
    var exchange: ProxyExchange<RecordingDownstream>!
    var clientLocalAddress: SocketAddress? { nil }

    func sendInterimResponse(_ head: ResponseHead) { events.append("interim \(head.status)") }
    func sendResponseHead(_ head: inout ResponseHead, framing: BodyFraming, closeAfter: Bool) {
        events.append("head \(head.status) \(framing)")
    }
    func sendResponseBody(_ data: UnsafeRawBufferPointer) { body.append(contentsOf: data) }
    func appendResponseBody(_ data: UnsafeRawBufferPointer) { body.append(contentsOf: data) }
    func flushResponse() {}
    func endResponse() { events.append("end") }
    func discardBufferedResponse() { events.append("discard") }
    func sendLocalReply(_ reply: LocalReply, keepAlive: Bool) { events.append("local \(reply.status)") }
    var isResponseCongested: Bool { false }
    var responseBytesSent: UInt64 { UInt64(body.count) }
    func upstreamReadyForBody() {}
    func pauseRequestBody() {}
    func resumeRequestBody() {}
    var lastRequestActivity: UInt64 { 0 }
    func rejectRequest(_ error: HTTPParseError) { events.append("reject \(error.status)"); exchange.abandon() }
    func cutResponse() { events.append("cut"); exchange.abandon() }
    func switchProtocols(_ head: ResponseHead, upstream: UpstreamConnection, rest: UnsafeRawBufferPointer) { events.append("switch") }
    func exchangeEnded() { ended = true }
    func armExchangeDeadline(inMs ms: UInt64) {}
    func advanceExchangeDeadline(inMs ms: UInt64) {}
}

struct ExchangeOverARecordingSinkTests {
    /// Runs one exchange for `request` through a `RecordingDownstream`; `backend` answers if given.
    private func run(_ request: String, backend answer: String?) throws -> (RecordingDownstream, MemoryWorker) {
        let worker = try MemoryWorker(config: #"{"backends":[{"id":"b","url":"http://127.0.0.1:9000"}],"access_log":null}"#)
        let pool = ExchangeStatePool()
        let sink = RecordingDownstream()
        let exchange = ProxyExchange<RecordingDownstream>(server: worker.server, settings: worker.server.settings,
                                                          detached: pool.detached, peerAddress: nil, isAdminListener: false)
        exchange.setDownstream(sink)
        sink.exchange = exchange
        exchange.x = pool.take(headLimits: HeadLimits())
        exchange.hasState = true
        exchange.x.pointee.request.bytes = Array(request.utf8)
        try HeadParser.parseRequest(into: &exchange.x.pointee.request, limits: HeadLimits())
        exchange.begin()
        worker.settle()
        if let answer {
            let upstream = try #require(worker.upstreams.first)
            #expect(String(decoding: upstream.received, as: UTF8.self).hasPrefix("GET /x HTTP/1.1\r\n"))
            upstream.peerSends(answer)
            worker.settle()
        }
        exchange.abandon()
        pool.recycle(exchange.x, idle: false)
        exchange.hasState = false
        return (sink, worker)
    }

    @Test func aProxiedResponseArrivesAsAHeadAndDeframedBodyBytes() throws {
        let (sink, _) = try run("GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
                                backend: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        #expect(sink.events == ["interim 103", "head 200 chunked", "end"])
        #expect(sink.body == Array("abcde".utf8), "no chunk framing reaches the sink")
        #expect(sink.ended)
    }

    @Test func theProxysOwnAnswersArriveAsLocalReplies() throws {
        let (sink, worker) = try run("GET /_health HTTP/1.1\r\nHost: a\r\n\r\n", backend: nil)
        #expect(sink.events == ["local 200"])
        #expect(worker.upstreams.isEmpty)
    }

    @Test func aBrokenResponseBodyWhoseHeadIsStillHeldBackBecomesA502() throws {
        let (sink, _) = try run("GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
                                backend: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        #expect(sink.events == ["head 200 chunked", "discard", "local 502"])
    }
}
