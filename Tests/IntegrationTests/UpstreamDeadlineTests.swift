import Foundation
import Glibc
import Testing

/// What each upstream timeout bounds (issue 12 §1.8, §1.13, §1.14): the response head in total,
/// the silences inside a body, event streams, interim responses and heads that can never end.
@Suite(.timeLimit(.minutes(2)))
struct UpstreamDeadlineTests {

    private func config(_ port: UInt16, _ timeouts: String, limits: String = "") -> String {
        """
        {"backends":[{"url":"http://127.0.0.1:\(port)"}],"health_check":{"interval_ms":60000},
         "timeouts":{\(timeouts)}\(limits.isEmpty ? "" : ",\"limits\":{\(limits)}")}
        """
    }

    @Test func anEventStreamSilentLongerThanTheBodyIdleLimitIsNotCut() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: config(backend.port, #""response_idle_ms":400,"event_stream_idle_ms":10000"#))
        let c = try TestConnection(port: proxy.port)
        let start = Date()
        let r = try c.request("GET", "/sse?events=3&interval_ms=1000")
        #expect(r.status == 200)
        #expect(r.text.contains("data: event 3"), "\(r.text)")
        #expect(Date().timeIntervalSince(start) > 1.8)
    }

    @Test func aPlainBodySilentLongerThanTheBodyIdleLimitIsCut() throws {
        let origin = ScriptedOrigin { conn, _ in
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            usleep(2_000_000)
            conn.send("world")
            return .keepReading
        }
        let proxy = try startProxy(config: config(origin.port, #""response_idle_ms":400,"upstream_ms":30000"#))
        let c = try TestConnection(port: proxy.port)
        let start = Date()
        try c.send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(throws: (any Error).self) { _ = try c.readResponse() }  // cut after "hello"
        let took = Date().timeIntervalSince(start)
        #expect(took > 0.3 && took < 1.8, "cut after \(took) s")
    }

    @Test func theResponseHeadDeadlineIsTotalNotASilenceLimit() throws {
        // One byte of the head every 100 ms: each read would have restarted a silence timer.
        let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
        let origin = ScriptedOrigin { conn, _ in
            for b in head { conn.send([b]); usleep(100_000) }
            return .keepReading
        }
        let proxy = try startProxy(config: config(origin.port, #""upstream_ms":1000"#))
        let start = Date()
        let r = try TestConnection(port: proxy.port).request("GET", "/trickle")
        let took = Date().timeIntervalSince(start)
        #expect(r.status == 504)
        #expect(took > 0.8 && took < 2.5, "504 after \(took) s")
    }

    @Test func interimResponsesNeitherExtendTheHeadDeadlineNorFloodTheClient() throws {
        let origin = ScriptedOrigin { conn, _ in
            for _ in 0..<200 {
                conn.send("HTTP/1.1 100 Continue\r\n\r\n")
                usleep(20_000)
            }
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return .keepReading
        }
        // Past the cap: 502 at once, after at most the cap's worth of 100s.
        let capped = try startProxy(config: config(origin.port, #""upstream_ms":30000"#, limits: #""max_interim_responses":5"#))
        let c = try TestConnection(port: capped.port)
        try c.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try c.readResponse()  // skips the interim responses
        #expect(r.status == 502)
        #expect(r.text.contains("interim"), "\(r.text)")
        // Under the cap, the deadline still counts from the request: 504 after ~1 s, not 4 s.
        let timed = try startProxy(config: config(origin.port, #""upstream_ms":1000"#, limits: #""max_interim_responses":1000"#))
        let start = Date()
        let t = try TestConnection(port: timed.port).request("GET", "/b")
        #expect(t.status == 504)
        #expect(Date().timeIntervalSince(start) < 2.5)
    }

    @Test func theProxyRelaysAtMostTheCapOfInterimResponses() throws {
        let origin = ScriptedOrigin { conn, _ in
            for _ in 0..<50 { conn.send("HTTP/1.1 100 Continue\r\n\r\n") }
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return .keepReading
        }
        let proxy = try startProxy(config: config(origin.port, #""upstream_ms":5000"#, limits: #""max_interim_responses":5"#))
        let c = try TestConnection(port: proxy.port)
        try c.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.waitForText("502", seconds: 5))
        let all = String(decoding: c.buffered, as: UTF8.self)
        let continues = all.components(separatedBy: "100 Continue").count - 1
        #expect(continues <= 5, "\(continues) interim responses reached the client")
        #expect(all.contains("502"))
    }

    @Test func aRouteCanGiveALongPollALongerHeadDeadline() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"upstreams": {"api": {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}]}},
             "backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "timeouts": {"upstream_ms": 400},
             "routes": [{"path": "/poll", "upstream": "api", "strip_prefix": true, "timeouts": {"upstream_ms": 5000}}]}
            """)
        // /delay answers after 1.2 s: too late for the default route, in time for /poll.
        #expect(try TestConnection(port: proxy.port).request("GET", "/delay?ms=1200").status == 504)
        let start = Date()
        #expect(try TestConnection(port: proxy.port).request("GET", "/poll/delay?ms=1200").status == 200)
        #expect(Date().timeIntervalSince(start) > 1.1, "the backend really waited")
    }

    @Test func aBareCRInAResponseHeadIsA502AtOnce() throws {
        let origin = ScriptedOrigin { conn, _ in
            conn.send("HTTP/1.1 200 OK\rContent-Length: 2\r")
            return .holdOpen
        }
        let proxy = try startProxy(config: config(origin.port, #""upstream_ms":10000"#))
        let start = Date()
        let r = try TestConnection(port: proxy.port).request("GET", "/cr")
        #expect(r.status == 502)
        #expect(r.text.contains("CR"), "\(r.text)")
        #expect(Date().timeIntervalSince(start) < 2)
    }
}
