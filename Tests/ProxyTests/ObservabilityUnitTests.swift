import Foundation
import Testing
@testable import Proxy

/// Access log line formats, the Prometheus number and label syntax, latency buckets, and the
/// `access_log` / `admin` config sections.
struct ObservabilityUnitTests {
    private func parsedRequest(_ raw: [UInt8]) throws -> RequestHead {
        var head = RequestHead()
        head.bytes = raw
        try HeadParser.parseRequest(into: &head, limits: HeadLimits())
        return head
    }

    private func entry(parsed: Bool = true, status: UInt16 = 200) -> AccessLogEntry {
        AccessLogEntry(client: Array("10.1.2.3".utf8), requestParsed: parsed, status: status, bytesSent: 1234,
                       durationMicros: 1_234_567, upstreamMicros: 987, requestID: Array("abc-1".utf8))
    }

    private let upstream = Upstream(shared: SharedUpstream(name: "api \"v2\"", workers: 1), worker: 0, backends: [])

    /// Formats with `body` and returns the bytes.
    private func format(_ body: (inout ByteBuffer) -> Void) -> [UInt8] {
        var out = ByteBuffer(capacity: 16)  // small: growth is exercised too
        body(&out)
        return out.array
    }

    private var clock: AccessLogClock {
        var c = AccessLogClock()
        c.update(nowMs: 1_795_786_571_195)  // 2026-11-27 13:36:11.195 UTC
        return c
    }

    @Test func combinedLineLayout() throws {
        let raw = Array("GET /p?a=\"b\" HTTP/1.1\r\nHost: x\r\nUser-Agent: agent \\ \"q\"\r\nReferer: http://r/\r\n\r\n".utf8)
        let r = try parsedRequest(raw)
        let out = format { AccessLogFormatter.combined(entry(), r, upstream: upstream, backend: nil, tls: nil, time: clock, into: &$0) }
        #expect(String(decoding: out, as: UTF8.self) == """
            10.1.2.3 - - [27/Nov/2026:13:36:11 +0000] "GET /p?a=\\x22b\\x22 HTTP/1.1" 200 1234 "http://r/" "agent \\x5C \\x22q\\x22" request_id=abc-1 upstream="api \\x22v2\\x22" backend=- backend_addr=- upstream_time=0.000987 request_time=1.234567 tls_version=- tls_cipher=- sni=-

            """)
    }

    @Test func combinedLineForARequestRefusedBeforeParsing() throws {
        var e = entry(parsed: false, status: 400)
        e.upstreamMicros = nil
        e.requestID = []
        // A stale head from an earlier request must not show.
        let stale = try parsedRequest(Array("GET /old HTTP/1.1\r\nHost: x\r\nUser-Agent: old\r\n\r\n".utf8))
        let out = format { AccessLogFormatter.combined(e, stale, upstream: nil, backend: nil, tls: nil, time: clock, into: &$0) }
        #expect(String(decoding: out, as: UTF8.self)
            == "10.1.2.3 - - [27/Nov/2026:13:36:11 +0000] \"-\" 400 1234 \"-\" \"-\" request_id=- upstream=- backend=- backend_addr=- upstream_time=- request_time=1.234567 tls_version=- tls_cipher=- sni=-\n")
    }

    @Test func tlsFieldsInBothFormats() throws {
        let r = try parsedRequest(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let tls = TLSSessionFacts(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: "a\"b.test")
        let line = String(decoding: format { AccessLogFormatter.combined(entry(), r, upstream: nil, backend: nil, tls: tls, time: clock, into: &$0) }, as: UTF8.self)
        #expect(line.hasSuffix(" tls_version=TLSv1.3 tls_cipher=TLS_AES_128_GCM_SHA256 sni=\"a\\x22b.test\"\n"), "\(line)")
        let json = format { AccessLogFormatter.json(entry(), r, upstream: nil, backend: nil, tls: tls, time: clock, into: &$0) }
        let object = try #require(JSONSerialization.jsonObject(with: Data(json)) as? [String: Any])
        #expect(object["tls_version"] as? String == "TLSv1.3" && object["tls_cipher"] as? String == "TLS_AES_128_GCM_SHA256")
        #expect(object["sni"] as? String == "a\"b.test")
        let plain = format { AccessLogFormatter.json(entry(), r, upstream: nil, backend: nil, tls: nil, time: clock, into: &$0) }
        let cleartext = try #require(JSONSerialization.jsonObject(with: Data(plain)) as? [String: Any])
        #expect(cleartext["tls_version"] is NSNull && cleartext["sni"] is NSNull)
    }

    @Test func jsonLineIsValidJSONForEveryByte() throws {
        // Every byte a header value may carry (obs-text included), plus quotes and backslashes.
        var agent: [UInt8] = Array("q\"b\\".utf8) + [0x09]
        agent += (0x20...0x7E).map { UInt8($0) } + (0x80...0xFF).map { UInt8($0) }
        let raw = Array("POST /j HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\nUser-Agent: ".utf8) + agent + Array("\r\n\r\n".utf8)
        let r = try parsedRequest(raw)
        let out = format { AccessLogFormatter.json(entry(), r, upstream: upstream, backend: nil, tls: nil, time: clock, into: &$0) }
        #expect(out.last == UInt8(ascii: "\n") && out.dropLast().allSatisfy { $0 >= 0x20 && $0 < 0x7F }, "one ASCII line")
        let object = try #require(JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        #expect(object["time"] as? String == "2026-11-27T13:36:11.195Z")
        #expect(object["method"] as? String == "POST" && object["protocol"] as? String == "HTTP/1.0")
        #expect(object["user_agent"] as? String == String(String.UnicodeScalarView(agent.map { Unicode.Scalar($0) })))
        #expect(object["upstream"] as? String == "api \"v2\"")
        #expect(object["duration"] as? Double == 1.234567 && object["upstream_duration"] as? Double == 0.000987)
        #expect(object["referer"] is NSNull && object["backend"] is NSNull)
        #expect(object["status"] as? Int == 200 && object["bytes_sent"] as? Int == 1234)
    }

    @Test func clockKeepsMillisecondsAndRollsSeconds() {
        var c = AccessLogClock()
        c.update(nowMs: 1_795_786_571_999)
        #expect(String(decoding: c.iso8601, as: UTF8.self) == "2026-11-27T13:36:11.999Z")
        c.update(nowMs: 1_795_786_572_007)
        #expect(String(decoding: c.iso8601, as: UTF8.self) == "2026-11-27T13:36:12.007Z")
        #expect(String(decoding: c.combined, as: UTF8.self) == "27/Nov/2026:13:36:12 +0000")
    }

    @Test func prometheusNumbersAndLabels() {
        #expect(Exposition.seconds(250) == "0.00025" && Exposition.seconds(1_000_000) == "1"
            && Exposition.seconds(2_500_000) == "2.5" && Exposition.seconds(60_000_000) == "60")
        #expect(Exposition.escape("a\"b\\c\nd") == "a\\\"b\\\\c\\nd")
    }

    @Test func latencyBuckets() {
        #expect(RequestStats.bucket(micros: 0) == 0 && RequestStats.bucket(micros: 250) == 0)
        #expect(RequestStats.bucket(micros: 251) == 1 && RequestStats.bucket(micros: 1000) == 2)
        #expect(RequestStats.bucket(micros: 60_000_000) == RequestStats.boundsMicros.count - 1)
        #expect(RequestStats.bucket(micros: 60_000_001) == RequestStats.bucketCount - 1)
        #expect(RequestStats.classIndex(101) == 0 && RequestStats.classIndex(499) == 3 && RequestStats.classIndex(0) == 4)
        let slab = CounterSlab(count: RequestStats.backendSize)
        RequestStats.record(slab, status: 204, micros: 1200)
        RequestStats.recordUpstream(slab, micros: 100)
        let totals = RequestTotals([slab, slab])
        #expect(totals.requests == 2 && totals.responses[1] == 2 && totals.buckets[3] == 2 && totals.sumMicros == 2400)
        #expect(RequestTotals.upstreamTimes([slab]).observations == 1)
    }

    @Test func loopbackPeers() {
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] { #expect(AdminPaths.isLoopback(ip), "\(ip)") }
        for ip in ["10.0.0.1", "::2", "128.0.0.1", "fe80::1", "::ffff:10.0.0.1", "1127.0.0.1"] { #expect(!AdminPaths.isLoopback(ip), "\(ip)") }
    }

    @Test func adminPathsMatchExactlyWithOptionalQuery() throws {
        let paths = AdminPaths(AdminConfig(metricsPath: "/ops/metrics"))
        func endpoint(_ line: String) throws -> AdminEndpoint? {
            paths.match(try parsedRequest(Array("\(line) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)))
        }
        #expect(try endpoint("GET /_health") == .health && endpoint("HEAD /_health?x=1") == .health)
        #expect(try endpoint("GET /ops/metrics") == .metrics && endpoint("GET /_metrics") == nil)
        #expect(try endpoint("GET /_status") == .status && endpoint("GET /_status.json") == .statusJSON)
        #expect(try endpoint("GET /_healthz") == nil && endpoint("POST /_health") == nil && endpoint("GET /") == nil)
    }
}

struct ObservabilityConfigTests {
    private func load(_ json: String) throws(ConfigError) -> ProxyConfig {
        try ConfigLoader.parse(Array(json.utf8), file: "config.json")
    }
    private let backends = "\"backends\": [{\"url\": \"http://127.0.0.1:3001\"}]"

    @Test func defaultsLogCombinedToStdoutAndServeAdminOnTheMainListener() throws {
        let c = try load("{\(backends)}")
        #expect(c.accessLog.destination == .stdout && c.accessLog.format == .combined)
        #expect(c.admin.listen == nil && c.admin.metricsPath == "/_metrics" && c.admin.statusJSONPath == "/_status.json")
    }

    @Test func accessLogForms() throws {
        #expect(try load("{\(backends), \"access_log\": null}").accessLog.destination == .off)
        #expect(try load("{\(backends), \"access_log\": {\"path\": null}}").accessLog.destination == .off)
        let file = try load("{\(backends), \"access_log\": {\"path\": \"/var/log/p.log\", \"format\": \"json\", \"flush_ms\": 100}}")
        #expect(file.accessLog == AccessLogConfig(destination: .file("/var/log/p.log"), format: .json, flushMs: 100))
    }

    @Test func badAccessLogAndAdminValuesNameTheField() {
        func error(_ json: String) -> ConfigError? {
            do throws(ConfigError) { _ = try load(json); return nil } catch { return error }
        }
        let format = error("{\(backends), \"access_log\": {\"format\": \"jsn\"}}")
        #expect(format?.field == "access_log.format" && format?.problem.contains("did you mean \"json\"") == true, "\(String(describing: format))")
        let path = error("{\(backends), \"access_log\": {\"path\": \"\"}}")
        #expect(path?.field == "access_log.path")
        let admin = error("{\(backends), \"admin\": {\"status_path\": \"status\"}}")
        #expect(admin?.field == "admin.status_path" && admin?.problem.contains("must start with \"/\"") == true)
        let quote = error("{\(backends), \"admin\": {\"status_json_path\": \"/s'x\"}}")
        #expect(quote?.field == "admin.status_json_path")
        let clash = error("{\(backends), \"admin\": {\"metrics_path\": \"/_health\"}}")
        #expect(clash?.field == "admin.metrics_path" && clash?.problem.contains("already admin.health_path") == true, "\(String(describing: clash))")
        let listen = error("{\(backends), \"admin\": {\"listen\": \"9901\"}}")
        #expect(listen?.field == "admin.listen" && listen?.problem.contains("missing ':'") == true)
        #expect(error("{\(backends), \"admin\": {\"metrics_path\": null, \"listen\": \"127.0.0.1:9901\"}}") == nil)
        let queue = error("{\(backends), \"access_log\": {\"buffer_bytes\": 1048576, \"max_pending_bytes\": 262144}}")
        #expect(queue?.field == "access_log.max_pending_bytes" && queue?.problem.contains("twice") == true, "\(String(describing: queue))")
    }
}
