import Testing
@testable import Proxy

/// A proxy worker (a `ProxyServer` on a libuv loop that is never run for I/O) whose clients are
/// `MemoryStream`s: the HTTP/1 connection's pipelining, half-close, lingering close and
/// backpressure, tested with no sockets and no timing (issue 12 §2). Requests go to `/_health`,
/// answered by the proxy itself; each carries `X-Request-Id`, echoed in its answer, so the order
/// of the answers shows. One unreachable backend: nothing here is proxied.
final class MemoryProxy {
    let worker: MemoryWorker
    init() throws {
        worker = try MemoryWorker(config: #"{"backends":[{"id":"b","url":"http://127.0.0.1:9"}],"access_log":null}"#)
    }
    func connect() -> MemoryStream { worker.connect() }

    /// A client that does not read its answers; its stream is congested past `highWater`.
    func connectNotReading(highWater: Int, lowWater: Int) -> MemoryStream {
        let c = worker.connect()
        c.highWater = highWater
        c.lowWater = lowWater
        c.peerIsReading = false
        return c
    }
    var spareStates: Int { worker.spareExchangeStates }

    static func request(_ id: String, close: Bool = false) -> String {
        "GET /_health HTTP/1.1\r\nHost: proxy\r\nX-Request-Id: \(id)\r\n" + (close ? "Connection: close\r\n" : "") + "\r\n"
    }
}

/// The request ids of the answers in `text`, in order.
private func answeredIDs(_ text: String) -> [String] {
    text.components(separatedBy: "\r\n").compactMap { line in
        line.hasPrefix("X-Request-Id: ") ? String(line.dropFirst("X-Request-Id: ".count)) : nil
    }
}

private func statusLines(_ text: String) -> Int {
    text.components(separatedBy: "\r\n").filter { $0.hasPrefix("HTTP/1.1 ") }.count
}

struct ConnectionOverMemoryTests {
    @Test func pipelinedRequestsAreAnsweredInOrderHoweverTheBytesArrive() throws {
        let proxy = try MemoryProxy()
        let all = (1...5).map { MemoryProxy.request("r\($0)") }.joined()
        // All in one read, and byte by byte: the same answers.
        for chunking in [all.utf8.count, 1, 7] {
            let c = proxy.connect()
            let bytes = Array(all.utf8)
            var i = 0
            while i < bytes.count {
                c.peerSends(Array(bytes[i..<min(i + chunking, bytes.count)]))
                i += chunking
            }
            #expect(answeredIDs(c.receivedText) == ["r1", "r2", "r3", "r4", "r5"], "chunks of \(chunking)")
            #expect(!c.isClosing && !c.sentEndOfOutput, "a keep-alive connection stays open")
        }
    }

    @Test func aHalfCloseStillGetsEveryAnswerThenTheConnectionCloses() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connect()
        c.peerSends(MemoryProxy.request("a") + MemoryProxy.request("b"))
        c.peerEnds()
        #expect(answeredIDs(c.receivedText) == ["a", "b"])
        #expect(c.sentEndOfOutput, "FIN after the answers")
        c.runPending()  // the shutdown completes: the client's FIN was seen, so it closes
        #expect(c.isClosing)
    }

    @Test func aHalfCloseWhileAnswersAreHeldBackAnswersThemFirst() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connectNotReading(highWater: 300, lowWater: 100)
        let ids = (1...20).map { "h\($0)" }
        c.peerSends(ids.map { MemoryProxy.request($0) }.joined())
        c.peerEnds()
        #expect(!c.sentEndOfOutput, "answers are still held back")
        c.peerIsReading = true
        c.peerReads()
        c.runPending()  // reading resumes on the next loop iteration
        #expect(answeredIDs(c.receivedText) == ids)
        #expect(c.sentEndOfOutput)
    }

    @Test func aClientThatDoesNotReadIsNotGivenMoreToAnswer() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connectNotReading(highWater: 1000, lowWater: 200)
        let ids = (1...200).map { "p\($0)" }
        for id in ids { c.peerSends(MemoryProxy.request(id)) }
        // Answers pile up to about the high-water mark, then reading stops: the rest stay with
        // the client (here: in the stream), not in the proxy's memory.
        #expect(c.isReadPaused)
        #expect(c.queued.count <= c.highWater + 600, "queued \(c.queued.count)")
        #expect(c.heldInputBytes > 0, "unread requests stay with the client")
        let answeredWhileBlocked = statusLines(String(decoding: c.queued, as: UTF8.self))
        #expect(answeredWhileBlocked < ids.count)
        // Reading resumes as the client reads; in the end every request is answered, in order.
        var rounds = 0
        while statusLines(c.receivedText) < ids.count && rounds < 1000 {
            c.peerReads()
            c.runPending()
            rounds += 1
        }
        #expect(answeredIDs(c.receivedText) == ids)
        #expect(!c.isReadPaused && c.heldInputBytes == 0)
    }

    @Test func aRefusedRequestIsAnsweredThenTheRestIsReadAndDiscardedUntilTheClientCloses() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connect()
        c.peerSends("GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        #expect(c.receivedText.hasPrefix("HTTP/1.1 400 "))
        #expect(c.receivedText.contains("Connection: close"))
        #expect(c.sentEndOfOutput, "FIN after the 400")
        c.runPending()
        // Lingering close: what the client still sends is read (so no reset destroys the 400 in
        // flight) and dropped — no second answer.
        #expect(!c.isClosing)
        c.peerSends(MemoryProxy.request("after"))
        #expect(statusLines(c.receivedText) == 1)
        c.peerEnds()
        #expect(c.isClosing, "closed once the client's FIN came")
    }

    @Test func connectionCloseIsHonouredAndLaterPipelinedRequestsAreNotAnswered() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connect()
        c.peerSends(MemoryProxy.request("first") + MemoryProxy.request("last", close: true) + MemoryProxy.request("ignored"))
        #expect(answeredIDs(c.receivedText) == ["first", "last"])
        #expect(c.sentEndOfOutput)
    }

    @Test func anIdleConnectionHoldsNoExchangeState() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connect()
        #expect(proxy.spareStates == 0)
        c.peerSends(MemoryProxy.request("one"))
        // Answered and idle: its state went back to the pool, and the next request takes it.
        #expect(proxy.spareStates == 1)
        let d = proxy.connect()
        d.peerSends("GET /_health HTTP/1.1\r\n")  // a head under way holds one
        #expect(proxy.spareStates == 0)
        d.peerSends("Host: x\r\nX-Request-Id: two\r\n\r\n")
        #expect(answeredIDs(d.receivedText) == ["two"])
        #expect(proxy.spareStates == 1)
    }

    @Test func aResetEndsTheConnectionAtOnce() throws {
        let proxy = try MemoryProxy()
        let c = proxy.connect()
        c.peerSends("GET /_health HTTP/1.1\r\nHost")
        c.peerEnds(UVError.connectionReset)
        #expect(c.isClosing)
        #expect(c.received.isEmpty)
    }
}

/// The exchange-state pool keeps what concurrency needs, and lets a past burst go.
struct ExchangeStatePoolTests {
    @Test func sparesFollowThePeakInUseThenShrinkBackAfterTwoTrims() {
        let pool = ExchangeStatePool(capacity: 4)
        let states = (0..<10).map { _ in pool.take(headLimits: HeadLimits()) }
        #expect(pool.inUse == 10)
        for s in states { pool.recycle(s, idle: false) }
        #expect(pool.count == 10, "a burst of 10 keeps its states for the next one")
        pool.trim()
        #expect(pool.count == 10, "the interval's peak was 10")
        pool.trim()
        #expect(pool.count == 4, "an interval without the burst trims back to capacity")
        let again = pool.take(headLimits: HeadLimits())
        #expect(pool.count == 3)
        pool.recycle(again, idle: true)
    }
}
