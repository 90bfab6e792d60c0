import Foundation
import Glibc
import Testing

/// HTTP/2 towards clients, end to end with independent clients: curl (`--http2-prior-knowledge`,
/// `--http2` over TLS), nghttp and h2load (Debian `nghttp2-client`), Python's `ssl` for ALPN, and
/// the `h2` package driving raw frames (`Python/h2_probe.py`): h2c and HTTP/1 on one port, ALPN,
/// the proxy's own answers, flow control as backpressure, resets, smuggling attempts, floods and
/// GOAWAY on drain.
@Suite(.serialized) struct HTTP2Tests {
    static func shell(_ command: String) -> (status: Int32, output: String) {
        TLSListenerTests.shell(command)
    }

    /// A proxy on a cleartext port (h2c and HTTP/1) in front of one test backend, logging JSON lines.
    struct Cleartext {
        let backend: ManagedProcess
        let proxy: ManagedProcess
        let logFile: String
        var port: UInt16 { proxy.port }
        var url: String { "http://127.0.0.1:\(proxy.port)" }

        init(extra: String = "", workers: Int = 2) throws {
            backend = try startBackend()
            logFile = NSTemporaryDirectory() + "proxy-h2-log-\(UUID().uuidString).json"
            proxy = try startProxy(config: proxyConfig(backends: [backend.port], extra: """
                ,"access_log":{"path":"\(logFile)","format":"json"}\(extra)
                """), workers: workers)
        }

        func stop() {
            proxy.stop()
            backend.stop()
            try? FileManager.default.removeItem(atPath: logFile)
        }

        func logLines() -> [[String: Any]] {
            guard let text = try? String(contentsOfFile: logFile, encoding: .utf8) else { return [] }
            return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
    }

    @Test func h2cWithPriorKnowledgeAndHTTP1ShareOnePort() throws {
        let s = try Cleartext()
        defer { s.stop() }
        let h2 = Self.shell("curl -sS --max-time 10 --http2-prior-knowledge -D - '\(s.url)/echo/h2?q=1' -H 'cookie: a=1' -H 'cookie: b=2'")
        #expect(h2.status == 0 && h2.output.hasPrefix("HTTP/2 200"), "\(h2.output)")
        #expect(h2.output.contains("\"path\":\"/echo/h2?q=1\""), "\(h2.output)")
        #expect(h2.output.contains("\"host\":\"127.0.0.1:\(s.port)\""), ":authority becomes Host: \(h2.output)")
        #expect(h2.output.contains("\"x-forwarded-proto\":\"http\""), "\(h2.output)")
        #expect(h2.output.contains("\"cookie\":\"a=1; b=2\""), "cookie crumbs are joined: \(h2.output)")
        #expect(h2.output.contains("x-request-id: "), "response fields are lowercase: \(h2.output)")
        #expect(!h2.output.lowercased().contains("connection:") && !h2.output.lowercased().contains("keep-alive"), "\(h2.output)")

        // HTTP/1.1 on the same port, before and after.
        let h1 = try get(s.port, "/echo/h1")
        #expect(h1.status == 200)
        // `Upgrade: h2c` stays refused: the request is served as HTTP/1.1 (the field is stripped).
        let c = try TestConnection(port: s.port)
        let up = try c.request("GET", "/echo/upgrade", headers: ["Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                                                                 "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"])
        #expect(up.status == 200 && !up.text.contains("\"upgrade\""), "\(up.status) \(up.text)")

        // A POST body over h2 reaches the backend intact.
        let body = writeTempFile(String(repeating: "0123456789abcdef", count: 40_000), suffix: ".bin")
        defer { try? FileManager.default.removeItem(atPath: body) }
        let post = Self.shell("curl -sS --max-time 10 --http2-prior-knowledge --data-binary @\(body) '\(s.url)/echo/post'")
        #expect(post.output.contains("\"body_bytes\":640000"), "\(post.output)")

        // The access log says HTTP/2.0 for the h2 requests and HTTP/1.1 for the others.
        #expect(eventually(5) { s.logLines().count >= 4 })
        let protocols = Dictionary(s.logLines().map { (($0["target"] as? String) ?? "", ($0["protocol"] as? String) ?? "") }) { a, _ in a }
        #expect(protocols["/echo/h2?q=1"] == "HTTP/2.0" && protocols["/echo/post"] == "HTTP/2.0", "\(s.logLines())")
        #expect(protocols["/echo/h1"] == "HTTP/1.1", "\(s.logLines())")

        // Metrics and the status page count HTTP/2.
        let metrics = try get(s.port, "/_metrics").text
        #expect(metrics.contains("proxy_http2_connections_total ") && !metrics.contains("proxy_http2_connections_total 0\n"), "\(metrics)")
        #expect(metrics.contains("proxy_http2_streams_total ") && !metrics.contains("proxy_http2_streams_total 0\n"))
        let status = try get(s.port, "/_status.json").text
        #expect(status.contains("\"http2_streams_total\":"), "\(status)")
        #expect(s.proxy.process.isRunning)
    }

    @Test func tlsListenersOfferH2ByALPN() throws {
        let s = try TLSListenerTests.start { certs in [try certs.leaf("site", names: ["localhost"])] }
        defer { s.stop() }
        let r = TLSListenerTests.curl(s, "localhost", "/echo/tls", "--http2")
        #expect(r.status == 0 && r.output.hasPrefix("HTTP/2 200"), "\(r.output)")
        #expect(r.output.contains("\"x-forwarded-proto\":\"https\""), "\(r.output)")
        #expect(r.output.contains("strict-transport-security: max-age=600"), "HSTS over h2: \(r.output)")
        // Python's ssl offering h2 first gets h2; nghttp negotiates it too.
        let py = Self.shell("""
            python3 -c 'import ssl, socket, sys
            c = ssl.create_default_context(cafile=sys.argv[1]); c.set_alpn_protocols(["h2", "http/1.1"])
            s = c.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="localhost")
            print(s.selected_alpn_protocol())' \(s.certs.caFile) \(s.httpsPort)
            """)
        #expect(py.output.trimmingCharacters(in: .whitespacesAndNewlines) == "h2", "\(py.output)")
        let nghttp = Self.shell("nghttp -nv --timeout=10 https://127.0.0.1:\(s.httpsPort)/echo/nghttp 2>&1")
        #expect(nghttp.output.contains("The negotiated protocol: h2") && nghttp.output.contains(":status: 200"), "\(nghttp.output)")
        // Configured without h2, a listener speaks HTTP/1.1 only.
        let h1only = try TLSListenerTests.start(tlsExtra: ", \"alpn\": [\"http/1.1\"]") { certs in [try certs.leaf("site", names: ["localhost"])] }
        defer { h1only.stop() }
        let r1 = TLSListenerTests.curl(h1only, "localhost", "/echo/h1only", "--http2")
        #expect(r1.output.hasPrefix("HTTP/1.1 200"), "\(r1.output)")
    }

    @Test func theProxysOwnAnswersWorkOverH2() throws {
        let s = try Cleartext(extra: #","limits":{"max_body_bytes":1000},"routes":[{"path":"/dead","upstream":"dead"}],"upstreams":{"dead":{"backends":[{"url":"http://127.0.0.1:1"}]}}"#)
        defer { s.stop() }
        func h2(_ path: String, _ extra: String = "") -> (status: Int32, output: String) {
            Self.shell("curl -sS --max-time 10 --http2-prior-knowledge -D - \(extra) '\(s.url)\(path)'")
        }
        let health = h2("/_health")
        #expect(health.output.hasPrefix("HTTP/2 200") && health.output.contains("\"status\":\"healthy\""), "\(health.output)")
        let status = h2("/_status")
        #expect(status.output.hasPrefix("HTTP/2 200") && status.output.contains("<html"), "\(status.output.prefix(300))")
        let tooBig = h2("/echo/big", "--data-binary @/etc/services")
        #expect(tooBig.output.hasPrefix("HTTP/2 413"), "\(tooBig.output.prefix(300))")
        let dead = h2("/dead/x", "-H 'accept: text/html'")
        #expect(dead.output.hasPrefix("HTTP/2 50"), "\(dead.output.prefix(300))")
        #expect(dead.output.contains("content-type: text/html"), "the HTML error page: \(dead.output.prefix(300))")
        let head = h2("/_health", "-I")
        #expect(head.output.hasPrefix("HTTP/2 200") && head.output.contains("content-length: "), "\(head.output)")
        #expect(s.proxy.process.isRunning)
    }

    @Test func manyConcurrentStreamsFromH2load() throws {
        let s = try Cleartext()
        defer { s.stop() }
        let r = Self.shell("h2load -n 4000 -c 4 -m 50 '\(s.url)/echo/load' 2>&1")
        #expect(r.output.contains("4000 succeeded, 0 failed, 0 errored"), "\(r.output)")
        #expect(r.output.contains("status codes: 4000 2xx"), "\(r.output)")
        let big = Self.shell("h2load -n 200 -c 2 -m 20 '\(s.url)/stream?bytes=300000' 2>&1")
        #expect(big.output.contains("200 succeeded, 0 failed"), "\(big.output)")
        #expect(big.output.contains("(60000000) data"), "every body byte arrived: \(big.output)")
        #expect(s.proxy.process.isRunning)
    }

    @Test func sigtermSendsGoawayAndLetsStreamsInFlightFinish() throws {
        let s = try Cleartext(extra: #","shutdown_grace_ms":10000"#)
        defer { s.stop() }
        let out = NSTemporaryDirectory() + "h2-drain-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        // A response the backend sends after 1.5 s; the proxy is told to stop 0.5 s in.
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/bin/sh")
        curl.arguments = ["-c", "curl -sS --max-time 10 --http2-prior-knowledge -o \(out) -w '%{http_code}' '\(s.url)/delay?ms=1500' > \(out).code 2>&1"]
        try curl.run()
        Thread.sleep(forTimeInterval: 0.5)
        s.proxy.signal(SIGTERM)
        #expect(eventually(10) { !curl.isRunning })
        let code = (try? String(contentsOfFile: out + ".code", encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: out + ".code")
        #expect(code == "200", "the stream in flight finished after the GOAWAY: \(code)")
        #expect(eventually(10) { !s.proxy.process.isRunning }, "the proxy exits once its last stream is done")
    }
}
