import Testing
@testable import Proxy

/// The request inspector's store and renderings with no I/O: bounds, in-flight entries, masking,
/// base64, the curl command and the replay's request bytes.
@Suite struct InspectorStoreTests {
    private func record(_ seq: UInt64, body: Int = 0, fields: [(name: String, value: String)] = [("Host", "a")], target: String = "/x",
                        bodyBytes: [UInt8]? = nil) -> InspectedExchange {
        InspectedExchange(seq: seq, startedMs: 0, method: body > 0 ? "POST" : "GET", target: target,
                          host: fields.first { $0.name == "Host" }?.value ?? "", protocolName: "HTTP/1.1",
                          requestFields: fields, requestBody: .init(bytes: bodyBytes ?? Array(repeating: 0x61, count: body), size: UInt64(body)), replayOf: nil,
                          route: "/", upstream: "default", backend: "b1", status: 200, responseFields: [], responseBody: .init(),
                          tunnel: false, error: nil, attempts: [], queueMs: nil, connectMs: nil, firstByteMs: nil, totalMs: 1, scheme: "http")
    }

    private func inFlight(_ seq: UInt64) -> InFlightExchange {
        InFlightExchange(seq: seq, startedMs: 0, method: "GET", target: "/x", host: "a", protocolName: "HTTP/1.1", replayOf: nil, route: "")
    }

    @Test func boundedByCountAndMemoryPerWorkerNewestFirst() {
        let store = InspectorStore(workers: 2)
        var limits = InspectConfig()
        limits.maxRequests = 3
        for worker in 0..<2 {
            for _ in 0..<5 {
                let seq = store.takeSeq()
                store.begin(inFlight(seq), worker: worker, limits: limits)
                store.finish(record(seq), worker: worker, limits: limits)
            }
        }
        #expect(store.latest == 10)
        let all = store.list(limit: 100)
        #expect(all.map(\.seq) == [10, 9, 8, 5, 4, 3], "three per worker, newest first")
        #expect(store.list(limit: 2).map(\.seq) == [10, 9])
        #expect(store.find(1) == nil && store.find(9) != nil)

        // In flight until finished; `after` still returns an older entry in flight.
        let open = store.takeSeq()
        store.begin(inFlight(open), worker: 0, limits: limits)
        if case .inFlight? = store.find(open) {} else { Issue.record("not listed in flight") }
        let later = store.takeSeq()
        store.finish(record(later), worker: 1, limits: limits)
        #expect(store.list(limit: 100, after: later).map(\.seq) == [open])
        store.finish(record(open), worker: 0, limits: limits)
        if case .done? = store.find(open) {} else { Issue.record("not done") }

        // Memory: recordings beyond max_memory_bytes push the oldest out.
        let big = InspectorStore(workers: 1)
        var tight = InspectConfig()
        tight.maxMemoryBytes = 1 << 20
        for _ in 0..<10 {
            let seq = big.takeSeq()
            big.finish(record(seq, body: 300_000), worker: 0, limits: tight)
        }
        #expect(big.list(limit: 100).map(\.seq) == [10, 9, 8])
        big.clear()
        #expect(big.list(limit: 100).isEmpty)
    }

    @Test func renderingMasksSecretsAndQuotesTheCurlCommand() throws {
        let fields: [(name: String, value: String)] = [("Host", "app.localhost:3000"), ("authorization", "Bearer t0ken"), ("Cookie", "a=b"),
                                                       ("X-Note", "it's"), ("Connection", "keep-alive")]
        let x = record(7, body: 3, fields: fields, target: "/a?b='c'")
        var config = InspectConfig()
        let detail = String(decoding: InspectorAPI.detail(.done(x), config: config), as: UTF8.self)
        #expect(!detail.contains("t0ken") && !detail.contains("a=b"))
        #expect(detail.contains("(12 bytes hidden)"))
        let curl = InspectorAPI.curl(x, reveal: false)
        #expect(curl.hasPrefix("curl -X 'POST' 'http://app.localhost:3000/a?b='\\''c'\\'''"))
        #expect(curl.contains("-H 'X-Note: it'\\''s'") && !curl.contains("Connection") && curl.hasSuffix("--data-binary 'aaa'"))
        // An absolute-form target goes to the proxy as it was (not to the host it names); a body
        // with control characters is not pasted into a shell.
        let absolute = record(9, fields: [("Host", "localhost:8080")], target: "http://evil.example/abs?x")
        #expect(InspectorAPI.curl(absolute, reveal: false) == "curl 'http://localhost:8080/' --request-target 'http://evil.example/abs?x'")
        let control = record(10, body: 3, bodyBytes: [0x61, 0x1b, 0x5b])
        #expect(InspectorAPI.curl(control, reveal: false).hasSuffix("# body of 3 bytes with control characters not shown"))
        config.revealSecrets = true
        #expect(String(decoding: InspectorAPI.detail(.done(x), config: config), as: UTF8.self).contains("Bearer t0ken"))
        #expect(InspectorAPI.base64(Array("Man".utf8)) == "TWFu" && InspectorAPI.base64(Array("Ma".utf8)) == "TWE="
                && InspectorAPI.base64(Array("M".utf8)) == "TQ==" && InspectorAPI.base64([]) == "")

        // The replay: the original head (secrets included), its body, no hop-by-hop fields.
        let replay = String(decoding: InspectorReplay.request(x, field: "7;t=abc"), as: UTF8.self)
        #expect(replay.hasPrefix("POST /a?b='c' HTTP/1.1\r\n"))
        #expect(replay.contains("authorization: Bearer t0ken\r\n") && replay.contains("X-Inspect-Replay: 7;t=abc\r\n"))
        #expect(!replay.contains("keep-alive") && replay.hasSuffix("Content-Length: 3\r\nConnection: close\r\n\r\naaa"))
        #expect(InspectorReplay.refusal(x) == nil)
        let cut = InspectedExchange(seq: 8, startedMs: 0, method: "POST", target: "/", host: "", protocolName: "HTTP/1.1", requestFields: [],
                                    requestBody: .init(bytes: [1], size: 2), replayOf: nil, route: "", upstream: "", backend: "", status: 0,
                                    responseFields: nil, responseBody: .init(), tunnel: false, error: nil, attempts: [], queueMs: nil,
                                    connectMs: nil, firstByteMs: nil, totalMs: 0, scheme: "http")
        #expect(InspectorReplay.refusal(cut)?.contains("max_body_bytes") == true)
        #expect(String(decoding: InspectorReplay.request(cut, field: "8;t=abc"), as: UTF8.self).contains("Host: localhost\r\n"))
    }
}
