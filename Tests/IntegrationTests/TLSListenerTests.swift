import Foundation
import Glibc
import Testing

/// HTTPS listeners end to end, with independent clients (curl, `openssl s_client`, Python's
/// `ssl`): SNI and ALPN, the forwarded scheme, HSTS, the redirect from cleartext, plain HTTP on
/// the TLS port, access log and metrics fields, session resumption across workers and reloads,
/// certificate reload (good and broken), refused starts, hostile handshakes and big bodies.
@Suite(.serialized) struct TLSListenerTests {
    /// A proxy with a cleartext listener (`--listen` puts it on a free port) and a TLS one.
    struct Setup {
        let certs: TestCertificates
        let backend: ManagedProcess
        let proxy: ManagedProcess
        let configFile: String
        let httpPort: UInt16
        let httpsPort: UInt16
        let logFile: String

        func stop() {
            proxy.stop()
            backend.stop()
            certs.remove()
            try? FileManager.default.removeItem(atPath: logFile)
        }
    }

    static func tlsConfig(backend: UInt16, certificates: [(cert: String, key: String)], tlsExtra: String = "",
                          redirect: Bool = true, logFile: String) -> String {
        let list = certificates.map { "{\"cert\":\"\($0.cert)\",\"key\":\"\($0.key)\"}" }.joined(separator: ",")
        return proxyConfig(backends: [backend], extra: """
            ,"listen":[{"address":"127.0.0.1:0","redirect_to_https":\(redirect)},
                       {"address":"127.0.0.1:0","tls":{"certificates":[\(list)]\(tlsExtra)}}],
             "access_log":{"path":"\(logFile)","format":"json"}
            """)
    }

    static func start(tlsExtra: String = ", \"hsts\": \"max-age=600\"", workers: Int = 2,
                      leaves: (TestCertificates) throws -> [(cert: String, key: String)]) throws -> Setup {
        let certs = try TestCertificates()
        let backend = try startBackend()
        let logFile = NSTemporaryDirectory() + "proxy-tls-log-\(UUID().uuidString).json"
        let config = tlsConfig(backend: backend.port, certificates: try leaves(certs), tlsExtra: tlsExtra, logFile: logFile)
        let file = writeTempFile(config, suffix: ".json")
        let proxy = try ManagedProcess("proxy", ["--config", file, "--listen", "127.0.0.1:0", "--workers", String(workers)])
        let https = try #require(proxy.otherListenerPorts.first, "\(proxy.log)")
        return Setup(certs: certs, backend: backend, proxy: proxy, configFile: file, httpPort: proxy.port, httpsPort: https, logFile: logFile)
    }

    /// Runs `command` with `/bin/sh -c`; returns the exit status and what it printed (both streams).
    @discardableResult
    static func shell(_ command: String) -> (status: Int32, output: String) {
        var output = ""
        let status = run("/bin/sh", ["-c", command], output: &output)
        return (status, output)
    }

    /// curl against the TLS port, trusting the test CA; `-w` appends the status code last.
    static func curl(_ s: Setup, _ name: String, _ path: String, _ extra: String = "") -> (status: Int32, output: String) {
        shell("curl -sS --max-time 10 --cacert \(s.certs.caFile) --resolve \(name):\(s.httpsPort):127.0.0.1 -D - \(extra) "
            + "'https://\(name):\(s.httpsPort)\(path)'")
    }

    @Test func httpsIsProxiedWithTheSchemeHSTSAndTLSLogFieldsAndSNIPicksTheCertificate() throws {
        let s = try Self.start { certs in
            [try certs.leaf("site", names: ["site.test", "localhost"]), try certs.leaf("api", names: ["api.test"], rsa: true),
             try certs.leaf("wild", names: ["*.wild.test"])]
        }
        defer { s.stop() }
        // Each name gets its own certificate; curl verifies it against the CA and the name.
        // Half of them over HTTP/1.1, half over HTTP/2 (what curl picks when ALPN offers h2).
        for (name, http1) in [("site.test", true), ("api.test", false), ("x.wild.test", true), ("localhost", false)] {
            let r = Self.curl(s, name, "/echo?n=1", http1 ? "--http1.1" : "")
            #expect(r.status == 0, "\(name): \(r.output)")
            #expect(r.output.hasPrefix(http1 ? "HTTP/1.1 200" : "HTTP/2 200"), "\(name): \(r.output)")
            #expect(r.output.contains("\"x-forwarded-proto\":\"https\""), "\(name): \(r.output)")
            #expect(r.output.contains("proto=https"), "\(r.output)")
            #expect(r.output.lowercased().contains("strict-transport-security: max-age=600"), "\(r.output)")
        }
        // A name no certificate has gets the first, which curl then refuses for that name.
        let other = Self.curl(s, "other.test", "/")
        #expect(other.status == 60 && other.output.contains("other.test"), "\(other.output)")
        // Python's ssl module, an independent client, verifying too.
        let py = Self.shell("""
            python3 -c 'import ssl, socket, sys
            c = ssl.create_default_context(cafile=sys.argv[1]); c.set_alpn_protocols(["http/1.1"])
            s = c.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="api.test")
            s.sendall(b"GET /py HTTP/1.1\\r\\nHost: api.test\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while True:
                d = s.recv(65536)
                if not d: break
                data += d
            print(s.version(), s.selected_alpn_protocol(), data.split(b"\\r\\n")[0].decode())' \(s.certs.caFile) \(s.httpsPort)
            """)
        #expect(py.status == 0 && py.output.contains("TLSv1.3 http/1.1 HTTP/1.1 200 OK"), "\(py.output)")

        // The cleartext listener sends everything (but the health endpoint) to HTTPS.
        let http = try TestConnection(port: s.httpPort)
        let redirect = try http.request("POST", "/a/b?c=d", body: Array("x".utf8))
        #expect(redirect.status == 308)
        #expect(redirect.header("Location") == "https://test.local:\(s.httpsPort)/a/b?c=d")
        // An absolute-form target keeps its path and query in the redirect.
        let absolute = try TestConnection(port: s.httpPort)
        try absolute.send("GET http://good.test/x/y?q=1 HTTP/1.1\r\nHost: good.test\r\n\r\n")
        #expect(try absolute.readResponse().header("Location") == "https://good.test:\(s.httpsPort)/x/y?q=1")
        let again = try TestConnection(port: s.httpPort)
        try again.send("GET / HTTP/1.1\r\nHost: [::1]:\(s.httpPort)\r\n\r\n")
        #expect(try again.readResponse().header("Location") == "https://[::1]:\(s.httpsPort)/")
        try again.send("GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        #expect(try again.readResponse().status == 400)
        #expect(try get(s.httpPort, "/_health").status == 200)

        // Plain HTTP to the TLS port: a readable 400, not a silent close.
        let plain = try TestConnection(port: s.httpsPort)
        try plain.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let refused = String(decoding: plain.readToEnd(), as: UTF8.self)
        #expect(refused.hasPrefix("HTTP/1.1 400 ") && refused.contains("plain HTTP request was sent to an HTTPS port"), "\(refused)")
        #expect(!refused.contains("Strict-Transport-Security"), "no HSTS over cleartext (RFC 6797 §7.2)")

        // The access log says which TLS each request came over. Each worker hands its lines over
        // on its own timer: wait for the two lines looked at, not for a count.
        var lines: [[String: Any]] = []
        #expect(eventually(5) {
            let text = (try? String(contentsOfFile: s.logFile, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            return lines.contains { $0["target"] as? String == "/py" } && lines.contains { $0["status"] as? Int == 308 }
        }, "\(lines.count) lines")
        let api = lines.first { $0["target"] as? String == "/py" }
        #expect(api?["tls_version"] as? String == "TLSv1.3" && api?["sni"] as? String == "api.test", "\(String(describing: api))")
        let cipher = api?["tls_cipher"] as? String ?? ""
        #expect(cipher.hasPrefix("TLS_"), "\(cipher)")
        let cleartext = lines.first { $0["status"] as? Int == 308 }
        #expect(cleartext?["tls_version"] is NSNull && cleartext?["sni"] is NSNull)

        // Metrics count the handshakes by result.
        let metrics = try get(s.httpPort, "/_metrics").text
        #expect(metrics.contains("proxy_tls_handshakes_total{result=\"plain_http\"} 1"), "\(metrics)")
        // curl checks the host name after the handshake: other.test's completed (and was then dropped).
        #expect(metrics.contains("proxy_tls_handshakes_total{result=\"ok\"} 6"))
        #expect(metrics.contains("proxy_tls_handshakes_by_version_total{version=\"1.3\"} 6"))
        #expect(metrics.contains("proxy_tls_handshake_duration_seconds_count 6"))
    }

    @Test func sessionsResumeAcrossWorkersAndAReloadAndOldVersionsAreRefused() throws {
        let s = try Self.start(workers: 2) { certs in [try certs.leaf("site", names: ["localhost"])] }
        defer { s.stop() }
        let session = s.certs.directory + "/session.pem"
        let request = "printf 'GET /_health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n'"
        func handshake(_ options: String, name: String = "localhost") -> String {
            Self.shell("\(request) | openssl s_client -ign_eof -connect 127.0.0.1:\(s.httpsPort) -servername \(name) "
                + "-CAfile \(s.certs.caFile) \(options) 2>&1").output
        }
        let first = handshake("-alpn http/1.1 -sess_out \(session)")
        // Not under another name (RFC 6066 §3); the same name in another case or with a trailing dot is the same.
        #expect(handshake("-sess_in \(session)", name: "other.test").contains("New, TLSv1.3"))
        #expect(handshake("-sess_in \(session)", name: "LOCALHOST.").contains("Reused, TLSv1.3"))
        #expect(first.contains("New, TLSv1.3") && first.contains("ALPN protocol: http/1.1") && first.contains("Verify return code: 0 (ok)"), "\(first)")
        // SO_REUSEPORT spreads these over both workers: every one resumes with the one ticket.
        for i in 0..<6 {
            let again = handshake("-sess_in \(session)")
            #expect(again.contains("Reused, TLSv1.3"), "attempt \(i): \(again)")
        }
        s.proxy.signal(SIGHUP)
        #expect(eventually(5) { s.proxy.log.contains("generation 2") }, "\(s.proxy.log)")
        let afterReload = handshake("-sess_in \(session)")
        #expect(afterReload.contains("Reused, TLSv1.3"), "\(afterReload)")
        // TLS 1.2 resumes too, and TLS 1.1 / 1.0 are refused.
        let twelve = s.certs.directory + "/session12.pem"
        #expect(handshake("-tls1_2 -sess_out \(twelve)").contains("New, TLSv1.2, Cipher is ECDHE-ECDSA-"))
        #expect(handshake("-tls1_2 -sess_in \(twelve)").contains("Reused, TLSv1.2"))
        for old in ["-tls1_1", "-tls1"] {
            // The client's own floor lowered, so it really offers the old version to the server.
            let refused = handshake(old + " -cipher DEFAULT@SECLEVEL=0")
            #expect(refused.contains("alert protocol version"), "\(old): \(refused)")
        }
        let metrics = try get(s.httpPort, "/_metrics").text
        #expect(metrics.contains("proxy_tls_handshakes_resumed_total{resumed=\"true\"} 9"), "\(metrics)")
    }

    @Test func aReloadSwapsCertificatesAndABrokenOneKeepsThePrevious() throws {
        let s = try Self.start { certs in [try certs.leaf("site", names: ["localhost", "old.test"])] }
        defer { s.stop() }
        func servedNames() -> String {
            Self.shell("openssl s_client -connect 127.0.0.1:\(s.httpsPort) -servername localhost -CAfile \(s.certs.caFile) "
                + "</dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName 2>&1").output
        }
        #expect(servedNames().contains("old.test"))
        let cert = s.certs.directory + "/site.pem", key = s.certs.directory + "/site.key"
        let replacement = try s.certs.leaf("next", names: ["localhost", "new.test"])
        try FileManager.default.removeItem(atPath: cert)
        try FileManager.default.copyItem(atPath: replacement.cert, toPath: cert)
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: replacement.key, toPath: key)
        s.proxy.signal(SIGHUP)
        #expect(eventually(5) { s.proxy.log.contains("generation 2: certificates reloaded") }, "\(s.proxy.log)")
        #expect(servedNames().contains("new.test"))

        // Broken: a key that does not match. Logged, and the previous certificate stays.
        let stranger = try s.certs.leaf("stranger", names: ["localhost"])
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: stranger.key, toPath: key)
        s.proxy.signal(SIGHUP)
        #expect(eventually(5) { s.proxy.log.contains("the previous certificates stay in use") }, "\(s.proxy.log)")
        #expect(s.proxy.log.contains("site.key: the key does not match the certificate"), "\(s.proxy.log)")
        #expect(servedNames().contains("new.test"))
        #expect(Self.curl(s, "localhost", "/after").output.hasHTTPStatus200)
    }

    @Test func brokenCertificatesStopTheStartAndCheckPrintsNamesAndExpiry() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let good = try certs.leaf("good", names: ["good.test", "127.0.0.1"])
        let other = try certs.leaf("other", names: ["other.test"])
        // No subjectAltName: only a common name.
        let bare = certs.directory + "/bare"
        #expect(Self.shell("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout \(bare).key "
            + "-out \(bare).pem -days 2 -subj /CN=bare.test 2>&1").status == 0)
        // Expired: signed by the test CA for two days in 2020 (`openssl ca` takes explicit dates).
        let expired = certs.directory + "/expired", d = certs.directory
        try """
            [ca]
            default_ca = test
            [test]
            database = \(d)/index.txt
            new_certs_dir = \(d)
            serial = \(d)/serial
            default_md = sha256
            policy = anything
            copy_extensions = copy
            [anything]
            commonName = supplied
            """.write(toFile: d + "/ca.cnf", atomically: true, encoding: .utf8)
        let made = Self.shell("cd \(d) && : > index.txt && echo 01 > serial && "
            + "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout \(expired).key -out \(expired).csr "
            + "-subj /CN=expired.test -addext subjectAltName=DNS:expired.test && "
            + "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in \(expired).csr -out \(expired).pem "
            + "-startdate 20200101000000Z -enddate 20200103000000Z 2>&1")
        #expect(made.status == 0, "\(made.output)")
        func check(_ cert: String, _ key: String) -> (status: Int32, output: String) {
            let config = Self.tlsConfig(backend: 9, certificates: [(cert, key)], logFile: "stdout")
            let file = writeTempFile(config, suffix: ".json")
            defer { try? FileManager.default.removeItem(atPath: file) }
            var output = ""
            let status = run(productsDirectory.appendingPathComponent("proxy").path, ["--config", file, "--check"], output: &output)
            return (status, output)
        }
        let ok = check(good.cert, good.key)
        #expect(ok.status == 0 && ok.output.contains("certificate \(good.cert): good.test, 127.0.0.1; expires "), "\(ok.output)")
        #expect(ok.output.contains("(in 1 days)") || ok.output.contains("(in 2 days)"), "\(ok.output)")
        let cases: [(String, String, String)] = [
            (good.cert, other.key, "other.key: the key does not match the certificate"),
            (certs.directory + "/missing.pem", good.key, "missing.pem: cannot open the certificate file"),
            (good.key, good.key, "no PEM certificate in the file"),
            (bare + ".pem", bare + ".key", "bare.pem: the certificate has no subjectAltName"),
            (expired + ".pem", expired + ".key", "expired.pem: the certificate expired"),
        ]
        for (cert, key, reason) in cases {
            let r = check(cert, key)
            #expect(r.status == 1 && r.output.contains("listen[1].tls: ") && r.output.contains(reason), "\(reason): \(r.output)")
            #expect(!r.output.contains(": OK"), "no OK before the failure")
            // And a real start refuses too, before binding anything.
            let config = Self.tlsConfig(backend: 9, certificates: [(cert, key)], logFile: "stdout")
            let file = writeTempFile(config, suffix: ".json")
            defer { try? FileManager.default.removeItem(atPath: file) }
            var output = ""
            let status = run(productsDirectory.appendingPathComponent("proxy").path, ["--config", file], output: &output)
            #expect(status == 1 && output.contains(reason), "\(output)")
        }
    }

    @Test func hostileHandshakesAreCountedClosedAndLeakNothing() throws {
        let s = try Self.start(tlsExtra: ", \"handshake_timeout_ms\": 300", workers: 1) { certs in [try certs.leaf("site", names: ["localhost"])] }
        defer { s.stop() }
        #expect(Self.curl(s, "localhost", "/warm").output.hasHTTPStatus200)
        let baseline = s.proxy.openFDs
        var held: [TestConnection] = []
        for i in 0..<30 {
            let c = try TestConnection(port: s.httpsPort)
            switch i % 3 {
            case 0: try c.send(Array(repeating: 0x01, count: 300))  // garbage
            case 1: try c.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])  // a truncated ClientHello, then silence
            default: break  // silent
            }
            held.append(c)
        }
        // Clients that vanish mid-handshake (reset) and mid-request body.
        for _ in 0..<10 {
            let c = try TestConnection(port: s.httpsPort)
            try c.send([0x16, 0x03, 0x01, 0x00, 0x40])
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        }
        let midBody = Self.shell("""
            python3 -c 'import ssl, socket, sys
            c = ssl.create_default_context(cafile=sys.argv[1])
            for _ in range(5):
                s = c.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="localhost")
                s.sendall(b"POST /echo HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: 1000000\\r\\n\\r\\n" + b"x" * 50000)
                s.close()
            print("done")' \(s.certs.caFile) \(s.httpsPort)
            """)
        #expect(midBody.output.contains("done"), "\(midBody.output)")
        #expect(eventually(5) {
            let m = (try? get(s.httpPort, "/_metrics").text) ?? ""
            return m.contains("proxy_tls_handshakes_total{result=\"timeout\"} ") && !m.contains("proxy_tls_handshakes_total{result=\"timeout\"} 0")
        })
        held.removeAll()
        // Every descriptor comes back; the proxy still serves.
        #expect(eventually(5) { s.proxy.openFDs <= baseline }, "fds \(s.proxy.openFDs) vs \(baseline)")
        #expect(Self.curl(s, "localhost", "/after").output.hasHTTPStatus200)
        let metrics = try get(s.httpPort, "/_metrics").text
        #expect(metrics.contains("proxy_tls_handshakes_total{result=\"failed\"} ") && !metrics.contains("proxy_tls_handshakes_total{result=\"failed\"} 0\n"), "\(metrics)")
    }

    @Test func aHundredMegabytesEachWayArriveIntactWithFlatMemory() throws {
        let s = try Self.start(workers: 1) { certs in [try certs.leaf("site", names: ["localhost"])] }
        defer { s.stop() }
        let size = 100_000_000
        let file = s.certs.directory + "/download"
        let down = Self.shell("curl -sS --max-time 120 --cacert \(s.certs.caFile) --resolve localhost:\(s.httpsPort):127.0.0.1 "
            + "-o \(file) -w '%{http_code}' 'https://localhost:\(s.httpsPort)/stream?bytes=\(size)'")
        #expect(down.status == 0 && down.output == "200", "\(down.output)")
        var check = StreamPatternCheck()
        let handle = try #require(FileHandle(forReadingAtPath: file))
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { check.consume([UInt8](chunk)[...]) }
        try handle.close()
        #expect(check.bytes == size && check.wrongPieces == 0)
        // The same bytes up, through the proxy and straight to the backend: the backend's hash agrees.
        func upload(_ url: String, _ tls: String) -> [String: Any]? {
            let r = Self.shell("curl -sS --max-time 120 \(tls) -H 'Expect:' --data-binary @\(file) '\(url)'")
            return try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any]
        }
        let viaProxy = upload("https://localhost:\(s.httpsPort)/echo", "--cacert \(s.certs.caFile) --resolve localhost:\(s.httpsPort):127.0.0.1")
        let direct = upload("http://127.0.0.1:\(s.backend.port)/echo", "")
        #expect(viaProxy?["body_bytes"] as? Int == size, "\(String(describing: viaProxy))")
        #expect(viaProxy?["body_fnv1a"] as? String == direct?["body_fnv1a"] as? String && direct?["body_fnv1a"] != nil)
        try? FileManager.default.removeItem(atPath: file)
        // Bodies stream: the proxy never holds more than its buffers (debug build, sanitizers scale).
        #expect(s.proxy.peakRSSKiB < 80_000 * sanitizerMemoryFactor, "peak RSS \(s.proxy.peakRSSKiB) KiB")
    }
}

extension String {
    /// curl's `-D -` output starts with a 200 status line, HTTP/1.1 (`HTTP/1.1 200 OK`) or HTTP/2 (`HTTP/2 200`).
    var hasHTTPStatus200: Bool { hasPrefix("HTTP/1.1 200") || hasPrefix("HTTP/2 200") }
}
