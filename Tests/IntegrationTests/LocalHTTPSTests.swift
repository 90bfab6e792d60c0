import Foundation
import Glibc
import Testing

/// Local HTTPS for development (`--https`, `"tls": "local"`): the CA the proxy makes on first
/// use, leaves per SNI name (`localhost`, `*.localhost`, the loopback addresses), and `proxy
/// trust` / `untrust` against a real headless Chromium with its own NSS database (in a
/// temporary HOME; `--no-system` keeps the machine's store out of the test).
@Suite(.serialized) struct LocalHTTPSTests {
    @Test func theGatewayServesHTTPSThatChromiumAcceptsOnceTrusted() throws {
        let root = NSTemporaryDirectory() + "proxy-local-https-\(UUID().uuidString)"
        let home = root + "/home", data = root + "/data/nested"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let backend = try startBackend()
        defer { backend.stop() }
        let environment = ["PROXY_DATA_DIR": data, "HOME": home]
        let proxy = try ManagedProcess("proxy", ["--to", "http://127.0.0.1:\(backend.port)", "--https", "--listen", "127.0.0.1:0",
                                                 "--workers", "2"], environment: environment)
        defer { proxy.stop() }
        let port = proxy.port
        let ca = data + "/local-ca.pem"

        // The CA was made on first use, its key private.
        var info = stat()
        #expect(stat(data + "/local-ca.key", &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(data, &info) == 0 && info.st_mode & 0o777 == 0o700)
        #expect(proxy.log.contains("local CA in \(data)"), "\(proxy.log)")

        // curl and Python's ssl verify each name against the CA; each name has its own leaf.
        for name in ["localhost", "app.localhost", "127.0.0.1"] {
            let r = TLSListenerTests.shell("curl -sS --max-time 10 --cacert \(ca) --resolve \(name):\(port):127.0.0.1 "
                + "-o /dev/null -w '%{http_code}' 'https://\(name):\(port)/x'")
            #expect(r.status == 0 && r.output == "200", "\(name): \(r.output)")
        }
        let san = TLSListenerTests.shell("openssl s_client -connect 127.0.0.1:\(port) -servername api.localhost </dev/null 2>/dev/null "
            + "| openssl x509 -noout -ext subjectAltName,extendedKeyUsage")
        #expect(san.output.contains("DNS:api.localhost") && san.output.contains("TLS Web Server Authentication"), "\(san.output)")
        let py = TLSListenerTests.shell("""
            python3 -c 'import ssl, socket, sys
            c = ssl.create_default_context(cafile=sys.argv[1])
            s = c.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="web.localhost")
            print(s.getpeercert()["subjectAltName"])' \(ca) \(port)
            """)
        #expect(py.output.contains("('DNS', 'web.localhost')"), "\(py.output)")

        // Chromium: refused before `proxy trust`, accepted after, refused again after `untrust`.
        func chromium(_ path: String, host: String = "localhost") -> String {
            TLSListenerTests.shell("HOME=\(home) timeout 60 chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage "
                + "--user-data-dir=\(root)/chromium --dump-dom 'https://\(host):\(port)\(path)' 2>/dev/null").output
        }
        #expect(!chromium("/before").contains("\"backend\":\"backend-"), "an untrusted CA must not load")
        let trust = TLSListenerTests.shell("HOME=\(home) PROXY_DATA_DIR=\(data) \(productsDirectory.path)/proxy trust --no-system")
        #expect(trust.status == 0 && trust.output.contains("nssdb: trusted") && trust.output.contains("NODE_EXTRA_CA_CERTS=\(ca)"), "\(trust.output)")
        let again = TLSListenerTests.shell("HOME=\(home) PROXY_DATA_DIR=\(data) \(productsDirectory.path)/proxy trust --no-system")
        #expect(again.output.contains("nssdb: already trusted"), "idempotent: \(again.output)")
        #expect(chromium("/page").contains("\"path\":\"/page\""), "localhost loads")
        #expect(chromium("/sub", host: "app.localhost").contains("\"path\":\"/sub\""), "app.localhost loads (Chromium resolves it to loopback)")
        #expect(chromium("/_status").contains("<title>Proxy status</title>"), "the status page over HTTPS")
        let untrust = TLSListenerTests.shell("HOME=\(home) PROXY_DATA_DIR=\(data) \(productsDirectory.path)/proxy untrust --no-system")
        #expect(untrust.status == 0 && untrust.output.contains("nssdb: removed"), "\(untrust.output)")
        try? FileManager.default.removeItem(atPath: root + "/chromium")
        #expect(!chromium("/after").contains("\"backend\":\"backend-"), "untrusted again")
    }
}
