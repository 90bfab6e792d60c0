import Foundation
import Testing
@testable import Proxy

/// Parses `json` as a config file named config.json.
private func load(_ json: String) throws(ConfigError) -> ProxyConfig {
    try ConfigLoader.parse(Array(json.utf8), file: "config.json")
}

/// The error `json` is rejected with, or `nil` (failing the test) when it loads.
private func configError(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) -> ConfigError? {
    do throws(ConfigError) {
        let config = try load(json)
        Issue.record("expected an error, loaded \(config)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

/// Checks that `json` is rejected for `field`, with `problem` in the message and the error naming
/// the file and an example — what every config error must do.
private func expectError(
    _ json: String, field: String, problem: String, example: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let error = configError(json, sourceLocation: sourceLocation) else { return }
    #expect(error.file == "config.json", sourceLocation: sourceLocation)
    #expect(error.field == field, sourceLocation: sourceLocation)
    #expect(error.problem.contains(problem), "problem: \(error.problem)", sourceLocation: sourceLocation)
    #expect(error.example != nil, "no example in \(error)", sourceLocation: sourceLocation)
    if let example {
        #expect(error.example == example, sourceLocation: sourceLocation)
    }
    let prefix = field.isEmpty ? "config.json: " : "config.json: \(field): "
    #expect(error.description.hasPrefix(prefix), "\(error)", sourceLocation: sourceLocation)
    #expect(error.description.contains("(example: "), "\(error)", sourceLocation: sourceLocation)
}

/// `{"backends": [<backend>]}` with `extra` members after it.
private func withBackend(_ extra: String = "", backend: String = #"{"url": "http://localhost:3001"}"#) -> String {
    #"{"backends": [\#(backend)]\#(extra.isEmpty ? "" : ", " + extra)}"#
}

@Suite struct ConfigTests {
    // MARK: Shapes that load

    @Test("The seed's config shape parses with everything else defaulted")
    func seedShapeParsesWithDefaults() throws {
        let config = try load(#"{"backends":[{"id":"backend1","url":"http://localhost:3001"}]}"#)
        var expected = ProxyConfig()
        expected.backends = [BackendConfig(id: "backend1", url: "http://localhost:3001", host: "localhost", port: 3001)]
        #expect(config == expected)
        #expect(config.listen == ListenAddress(host: "0.0.0.0", port: 8080))
        #expect(config.healthCheck == HealthCheckConfig(
            path: "/health", intervalMs: 5000, timeoutMs: 2000, healthyThreshold: 2, unhealthyThreshold: 3))
        #expect(config.timeouts == TimeoutsConfig(connectMs: 5000, upstreamMs: 30000, clientHeaderMs: 10000, idleMs: 60000))
        #expect(config.limits == LimitsConfig(maxHeadBytes: 32768, maxTargetBytes: 8192, maxHeaderCount: 100))
        #expect(config.pool == PoolConfig(idleTimeoutMs: 4000, maxIdlePerBackend: 100_000))
        #expect(config.http2 == HTTP2Config())
        #expect(config.http2.h2c && config.http2.maxConcurrentStreams == 100 && config.http2.streamWindowBytes == 262_144
            && config.http2.connectionWindowBytes == 1_048_576 && config.http2.maxHeaderListBytes == 65536
            && config.http2.maxGlitches == 1000)
    }

    @Test func theHTTP2SectionIsReadAndCheckedField() throws {
        let config = try load(#"{"backends":[{"url":"http://a:1"}],"http2":{"h2c":false,"max_concurrent_streams":20,"stream_window_bytes":65536,"connection_window_bytes":2000000,"max_header_list_bytes":8192,"idle_timeout_ms":5000,"reset_burst":10,"resets_per_s":5,"max_continuation_frames":4,"max_queued_control_frames":50,"max_glitches":30,"max_control_frames_per_s":200}}"#)
        #expect(!config.http2.h2c && config.http2.maxConcurrentStreams == 20 && config.http2.streamWindowBytes == 65536
            && config.http2.connectionWindowBytes == 2_000_000 && config.http2.maxHeaderListBytes == 8192
            && config.http2.idleTimeoutMs == 5000 && config.http2.resetBurst == 10 && config.http2.resetsPerSecond == 5
            && config.http2.maxContinuationFrames == 4 && config.http2.maxQueuedControlFrames == 50
            && config.http2.maxGlitches == 30 && config.http2.maxControlFramesPerS == 200)
        expectError(#"{"backends":[{"url":"http://a:1"}],"http2":{"max_concurent_streams":5}}"#, field: "http2.max_concurent_streams",
                    problem: #"did you mean "max_concurrent_streams"?"#, example: #""max_concurrent_streams": 100"#)
        expectError(#"{"backends":[{"url":"http://a:1"}],"http2":{"stream_window_bytes":100}}"#, field: "http2.stream_window_bytes",
                    problem: "must be at least 16384, got 100")
        expectError(#"{"backends":[{"url":"http://a:1"}],"http2":{"h2c":"yes"}}"#, field: "http2.h2c",
                    problem: #"expected true or false, got a string"#)
    }

    @Test("The default config has no backends and the documented defaults")
    func defaultConfig() {
        let config = ProxyConfig()
        #expect(config.backends.isEmpty)
        #expect(config.listen.description == "0.0.0.0:8080")
        #expect(config.pool.idleTimeoutMs < 5000, "must stay below Node's keep-alive timeout")
    }

    @Test("A config using every key parses into every field")
    func fullShapeParses() throws {
        let config = try load("""
            {
              "listen": "127.0.0.1:9090",
              "backends": [
                {"id": "api-a", "url": "http://10.0.0.1:3001/"},
                {"url": "http://[::1]:3002"},
                {"url": "http://app.internal"}
              ],
              "health_check": {"path": "/ready?full=1", "interval_ms": 1000, "timeout_ms": 500,
                               "healthy_threshold": 1, "unhealthy_threshold": 5},
              "timeouts": {"connect_ms": 100, "upstream_ms": 200, "client_header_ms": 300, "idle_ms": 400},
              "limits": {"max_head_bytes": 65536, "max_target_bytes": 4096, "max_header_count": 50},
              "pool": {"idle_timeout_ms": 2500, "max_idle_per_backend": 0}
            }
            """)
        #expect(config == ProxyConfig(
            listen: ListenAddress(host: "127.0.0.1", port: 9090),
            backends: [
                BackendConfig(id: "api-a", url: "http://10.0.0.1:3001/", host: "10.0.0.1", port: 3001),
                BackendConfig(id: "backend2", url: "http://[::1]:3002", host: "::1", port: 3002),
                BackendConfig(id: "backend3", url: "http://app.internal", host: "app.internal", port: 80),
            ],
            healthCheck: HealthCheckConfig(
                path: "/ready?full=1", intervalMs: 1000, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 5),
            timeouts: TimeoutsConfig(connectMs: 100, upstreamMs: 200, clientHeaderMs: 300, idleMs: 400),
            limits: LimitsConfig(maxHeadBytes: 65536, maxTargetBytes: 4096, maxHeaderCount: 50),
            pool: PoolConfig(idleTimeoutMs: 2500, maxIdlePerBackend: 0)
        ))
    }

    @Test("A partial section keeps the defaults for the keys it leaves out")
    func partialSectionKeepsDefaults() throws {
        let config = try load(withBackend(#""health_check": {"interval_ms": 1000}"#))
        #expect(config.healthCheck == HealthCheckConfig(intervalMs: 1000))
    }

    // MARK: Whole-file errors

    @Test("A JSON syntax error names the file, line and column")
    func syntaxErrorHasLineAndColumn() {
        let error = configError("{\n  \"backends\": [\n    {\"url\": \"http://localhost:3001\"}\n  ]\n  \"listen\": \":80\"\n}")
        #expect(error?.line == 5)
        #expect(error?.column == 3)
        #expect(error?.field == "")
        #expect(error?.description == "config.json:5:3: expected ',' or '}' after object member, found '\"'")
    }

    @Test("An empty file says so and shows a minimal config")
    func emptyFileIsExplained() {
        expectError("  \n", field: "", problem: "the file is empty",
                    example: #"{"backends": [{"id": "backend1", "url": "http://127.0.0.1:3001"}]}"#)
    }

    @Test("A top level that is not an object is rejected")
    func topLevelMustBeAnObject() {
        expectError(#"[{"url": "http://localhost:3001"}]"#, field: "",
                    problem: "expected an object at the top level, got an array")
    }

    @Test("Duplicate keys in the file are a syntax error")
    func duplicateKeysAreRejected() {
        let error = configError(#"{"backends": [], "backends": []}"#)
        #expect(error?.problem.contains("duplicate key \"backends\"") == true)
        #expect(error?.line == 1 && error?.column == 18)
    }

    // MARK: Backends

    @Test("At least one backend is required", arguments: ["{}", #"{"backends": []}"#])
    func atLeastOneBackendIsRequired(json: String) {
        expectError(json, field: "backends", problem: "at least one backend is required",
                    example: #""backends": [{"id": "backend1", "url": "http://127.0.0.1:3001"}]"#)
    }

    @Test("Backends must be an array of objects")
    func backendsMustBeAnArrayOfObjects() {
        expectError(#"{"backends": {"url": "http://localhost:3001"}}"#, field: "backends",
                    problem: "expected an array of backends, got an object; wrap it in [ ]")
        expectError(#"{"backends": ["http://localhost:3001"]}"#, field: "backends[0]",
                    problem: "expected an object, got a string (\"http://localhost:3001\")",
                    example: #"{"id": "backend1", "url": "http://127.0.0.1:3001"}"#)
    }

    @Test("Every backend needs a URL")
    func everyBackendNeedsAURL() {
        expectError(withBackend(backend: #"{"id": "a"}"#), field: "backends[0].url", problem: "missing",
                    example: #""url": "http://127.0.0.1:3001""#)
    }

    @Test("Backend URLs accept names, IPv4 and bracketed IPv6, with port 80 by default", arguments: [
        ("http://localhost:3001", "localhost", 3001),
        ("http://localhost:3001/", "localhost", 3001),
        ("http://127.0.0.1", "127.0.0.1", 80),
        ("http://[::1]:9000", "::1", 9000),
        ("http://[2001:db8::7]/", "2001:db8::7", 80),
        ("HTTP://Example.COM:8080", "Example.COM", 8080),
        ("http://api_service:65535", "api_service", 65535),
    ] as [(String, String, UInt16)])
    func backendURLForms(url: String, host: String, port: UInt16) throws {
        let config = try load(withBackend(backend: #"{"url": "\#(url)"}"#))
        #expect(config.backends == [BackendConfig(id: "backend1", url: url, host: host, port: port)])
    }

    @Test("Bad backend URLs are explained", arguments: [
        ("localhost:3001", #"expected an http URL like "http://localhost:3001", got "localhost:3001" (add "http://" in front)"#),
        ("gopher://localhost:3001", "unsupported scheme \"gopher\"; use http:// or https://"),
        ("ftp://files", #"unsupported scheme "ftp"; use http://"#),
        ("http://localhost:3001/api", #"cannot have a path ("/api")"#),
        ("http://localhost:3001?x=1", "cannot have a query or fragment"),
        ("http://localhost/#top", "cannot have a query or fragment"),
        ("http://user:pw@localhost:3001", "credentials in a backend URL"),
        ("http://", "missing the host"),
        ("http://:3001", "missing the host"),
        ("http://localhost:", "missing the port number"),
        ("http://localhost:0", "from 1 to 65535, got \"0\""),
        ("http://localhost:65536", "from 1 to 65535"),
        ("http://localhost:+80", "from 1 to 65535"),
        ("http://localhost:http", "from 1 to 65535"),
        ("http://::1:3001", "IPv6 addresses must be in brackets"),
        ("http://[::1:3001", "missing ']'"),
        ("http://[::1]3001", "expected ':' and a port after ']'"),
        ("http://[::g]:3001", "\"::g\" is not a valid IPv6 address"),
        ("http://127.0.0.300:3001", "\"127.0.0.300\" is not a valid IPv4 address"),
        ("http://my host:3001", "not a valid host name"),
        ("http://a..b:3001", "not a valid host name"),
        ("http://.a:3001", "not a valid host name"),
        ("", "expected an http URL"),
    ])
    func badBackendURLs(url: String, problem: String) {
        expectError(withBackend(backend: #"{"url": "\#(url)"}"#), field: "backends[0].url", problem: problem,
                    example: #""url": "http://127.0.0.1:3001""#)
    }

    @Test("The URL error reads as one clear line")
    func urlErrorDescription() {
        let error = configError(withBackend(backend: #"{"url": "localhost:3001"}"#))
        #expect(error?.description == #"config.json: backends[0].url: expected an http URL like "http://localhost:3001", "#
            + #"got "localhost:3001" (add "http://" in front) (example: "url": "http://127.0.0.1:3001")"#)
    }

    @Test("Backend ids default to their 1-based position")
    func backendIDsDefault() throws {
        let config = try load(#"{"backends": [{"url": "http://a"}, {"id": "x", "url": "http://b"}, {"url": "http://c"}]}"#)
        #expect(config.backends.map(\.id) == ["backend1", "x", "backend3"])
    }

    @Test("Duplicate backend ids are rejected, explicit or defaulted")
    func duplicateBackendIDsAreRejected() {
        expectError(#"{"backends": [{"id": "a", "url": "http://a"}, {"id": "a", "url": "http://b"}]}"#,
                    field: "backends[1].id", problem: #""a" is already used by backends[0]; ids must be unique"#)
        expectError(#"{"backends": [{"url": "http://a"}, {"id": "backend1", "url": "http://b"}]}"#,
                    field: "backends[1].id", problem: #""backend1" is the default id of backends[0]"#)
        expectError(#"{"backends": [{"id": "backend2", "url": "http://a"}, {"url": "http://b"}]}"#,
                    field: "backends[1].id",
                    problem: #"this backend's default id "backend2" is already used by backends[0]; give it a unique "id""#,
                    example: #""id": "backend3""#)
    }

    @Test("Backend ids must be non-empty text without control characters")
    func backendIDsAreChecked() {
        expectError(withBackend(backend: #"{"id": "", "url": "http://a"}"#), field: "backends[0].id", problem: "must not be empty")
        expectError(withBackend(backend: #"{"id": "a\nb", "url": "http://a"}"#), field: "backends[0].id",
                    problem: "must not contain control characters")
        expectError(withBackend(backend: #"{"id": 1, "url": "http://a"}"#), field: "backends[0].id",
                    problem: "expected a string, got a number (1)", example: #""id": "backend1""#)
    }

    // MARK: Listen

    @Test("Listen accepts host:port, :port and [v6]:port", arguments: [
        (":8080", "0.0.0.0", 8080),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("[::1]:9000", "::1", 9000),
        ("[::]:80", "::", 80),
        ("localhost:65535", "localhost", 65535),
    ] as [(String, String, UInt16)])
    func listenForms(text: String, host: String, port: UInt16) throws {
        let expected = ListenAddress(host: host, port: port)
        #expect(ListenAddress.parse(text) == expected)
        #expect(try load(withBackend(#""listen": "\#(text)""#)).listen == expected)
    }

    @Test("Listen addresses print in a form that parses back")
    func listenDescriptionRoundTrips() {
        #expect(ListenAddress(host: "::1", port: 9000).description == "[::1]:9000")
        #expect(ListenAddress(host: "127.0.0.1", port: 0).description == "127.0.0.1:0")
        for text in ["[::1]:9000", "10.1.2.3:80", "example.com:8080"] {
            #expect(ListenAddress.parse(text)?.description == text)
        }
    }

    @Test("Bad listen addresses are rejected with the reason", arguments: [
        ("8080", #"missing ':' before the port; write ":8080" (every interface with a config file, loopback with --to)"#),
        ("127.0.0.1", "missing the port"),
        ("127.0.0.1:", "missing the port number after ':'"),
        (":", "missing the port number after ':'"),
        (":65536", "from 0 to 65535"),
        (":-1", "from 0 to 65535"),
        (":80a", "from 0 to 65535"),
        ("::1:9000", "IPv6 addresses must be in brackets"),
        ("[::1]", "missing the port"),
        ("[::1]:", "missing the port number"),
        ("[nope]:80", "not a valid IPv6 address"),
        ("256.0.0.1:80", "not a valid IPv4 address"),
        ("", "missing the host"),
    ])
    func badListenAddresses(text: String, reason: String) {
        #expect(ListenAddress.parse(text) == nil)
        let json = withBackend(#""listen": "\#(text)""#)
        expectError(json, field: "listen",
                    problem: #"expected "host:port", ":port" or "[IPv6]:port" (port 0-65535), got "\#(text)": "#,
                    example: #""listen": "0.0.0.0:8080""#)
        #expect(configError(json)?.problem.contains(reason) == true)
    }

    @Test func listenTakesAListOfListenersWithTLS() throws {
        let config = try ConfigLoader.parse(Array(withBackend(#"""
            "listen": [":8080", {"address": "127.0.0.1:8081", "redirect_to_https": true},
                       {"address": ":8443", "tls": {"certificates": [{"cert": "certs/a.pem", "key": "/abs/a.key"}],
                        "min_version": "1.3", "alpn": ["http/1.1"], "hsts": "max-age=60", "handshake_timeout_ms": 2000}}]
            """#).utf8), file: "/etc/proxy/config.json")
        #expect(config.listeners.count == 3)
        #expect(config.listen == ListenAddress(host: "0.0.0.0", port: 8080))
        #expect(config.listeners[1].redirectToHTTPS && config.listeners[1].tls == nil)
        let tls = try #require(config.listeners[2].tls)
        // Relative to the config file's directory; absolute kept.
        #expect(tls.certificates == [CertificateFiles(cert: "/etc/proxy/certs/a.pem", key: "/abs/a.key")])
        #expect(tls.minVersion == "1.3" && tls.hsts == "max-age=60" && tls.handshakeTimeoutMs == 2000)
        #expect(config.firstTLSListener == 2)
        // The string form is one cleartext listener, as before.
        #expect(try load(withBackend(#""listen": ":9000""#)).listeners == [ListenerConfig(address: ListenAddress(host: "0.0.0.0", port: 9000))])
    }

    @Test func badListenersAreExplained() {
        let cert = #"{"cert": "a.pem", "key": "a.key"}"#
        expectError(withBackend(#""listen": [{"address": ":80", "redirect_to_https": true}]"#),
                    field: "listen[0].redirect_to_https", problem: "there is no TLS listener to redirect to; add one with a \"tls\" object")
        expectError(withBackend(#""listen": [{"adress": ":80"}]"#), field: "listen[0].adress", problem: #"unknown key; did you mean "address"?"#)
        expectError(withBackend(#""listen": [{"tls": {"certificates": [\#(cert)]}}]"#), field: "listen[0].address",
                    problem: "missing; every listener needs its address")
        expectError(withBackend(#""listen": [{"address": ":443", "tls": {}}]"#), field: "listen[0].tls.certificates",
                    problem: "missing; a TLS listener needs at least one certificate")
        expectError(withBackend(#""listen": [{"address": ":443", "tls": {"certificates": [\#(cert)], "min_version": "1.1"}}]"#),
                    field: "listen[0].tls.min_version",
                    problem: #"expected "1.2" (TLS 1.2 and 1.3) or "1.3" (TLS 1.3 only), got "1.1"; older versions are not offered"#)
        expectError(withBackend(#""listen": [{"address": ":443", "tls": {"certificates": [\#(cert)], "alpn": ["h3"]}}]"#),
                    field: "listen[0].tls.alpn[0]", problem: #""h3" is not a protocol this proxy speaks; it offers "h2", "http/1.1""#)
        expectError(withBackend(#""listen": [{"address": ":443", "tls": {"certificates": [{"cert": "a.pem"}]}}]"#),
                    field: "listen[0].tls.certificates[0].key", problem: "missing; the private key file (PEM)")
        expectError(withBackend(#""listen": [":80", ":80"]"#), field: "listen[1].address", problem: #""0.0.0.0:80" is already listen[0]"#)
        expectError(withBackend(#""listen": []"#), field: "listen", problem: "at least one listener is required")
        expectError(withBackend(#""listen": [{"address": ":443", "tls": {"certificates": [\#(cert)], "hsts": "1 year"}}]"#),
                    field: "listen[0].tls.hsts", problem: #"expected a Strict-Transport-Security value starting with "max-age=", got "1 year""#)
    }

@Test func backendTLSSettingsAreChecked() throws {
        func error(_ json: String) -> String {
            do { _ = try ConfigLoader.parse(Array(json.utf8), file: "/etc/p/config.json"); return "loaded" } catch { return error.description }
        }
        #expect(error(#"{"backends":[{"url":"http://a:1","tls":{"verify":false}}]}"#)
            .contains("backends[0].tls: TLS settings for an http:// backend; use an https:// URL"))
        #expect(error(#"{"backends":[{"url":"https://a","tls":{"cert":"c.pem"}}]}"#).contains("backends[0].tls.key: a client certificate needs both"))
        #expect(error(#"{"backends":[{"url":"https://a","tls":{"verfy":false}}]}"#).contains("did you mean \"verify\"?"))
        let config = try ConfigLoader.parse(Array(#"""
            {"backends":[{"url":"https://a"},{"url":"https://b:8443","tls":{"verify":false}},{"url":"http://c"}],
             "backend_tls":{"ca":"ca.pem"},
             "upstreams":{"u":{"tls":{"server_name":"u.internal"},"backends":[{"url":"https://u"}]}},
             "routes":[{"path":"/u","upstream":"u"}]}
            """#.utf8), file: "/etc/p/config.json")
        #expect(config.backends[0].port == 443 && config.backends[0].tls == BackendTLSConfig(ca: "/etc/p/ca.pem"))
        #expect(config.backends[1].tls == BackendTLSConfig(verify: false), "a backend's own tls replaces backend_tls")
        #expect(config.backends[2].tls == nil)
        #expect(config.upstreams[0].backends[0].tls == BackendTLSConfig(serverName: "u.internal"))
    }

    @Test("Listen must be a string")
    func listenMustBeAString() {
        expectError(withBackend(#""listen": 8080"#), field: "listen", problem: "expected a string, got a number (8080)")
    }

    // MARK: Numbers and types

    @Test("Wrong types name the field, what was expected and an example")
    func wrongTypesAreExplained() {
        expectError(withBackend(#""health_check": {"interval_ms": "5000"}"#), field: "health_check.interval_ms",
                    problem: #"expected a whole number, got a string ("5000"); remove the quotes"#,
                    example: #""interval_ms": 5000"#)
        expectError(withBackend(#""timeouts": {"connect_ms": true}"#), field: "timeouts.connect_ms",
                    problem: "expected a whole number, got a boolean (true)", example: #""connect_ms": 5000"#)
        // (null is accepted there: connect-only probes, see RoutingConfigTests.)
        expectError(withBackend(#""health_check": {"path": 5}"#), field: "health_check.path",
                    problem: "expected a string, got a number (5)", example: #""path": "/health""#)
        expectError(withBackend(#""health_check": 5000"#), field: "health_check",
                    problem: "expected an object, got a number (5000)",
                    example: #""health_check": {"path": "/health", "interval_ms": 5000, "timeout_ms": 2000, "#
                        + #""healthy_threshold": 2, "unhealthy_threshold": 3}"#)
    }

    @Test("Fractions are refused rather than rounded")
    func fractionsAreRefused() {
        expectError(withBackend(#""pool": {"idle_timeout_ms": 2.5}"#), field: "pool.idle_timeout_ms",
                    problem: "expected a whole number, got 2.5", example: #""idle_timeout_ms": 4000"#)
        expectError(withBackend(#""pool": {"idle_timeout_ms": 1e3}"#), field: "pool.idle_timeout_ms",
                    problem: "expected a whole number, got 1e3")
    }

    @Test("Numbers out of range are rejected with the bound", arguments: [
        (#""health_check": {"interval_ms": 5}"#, "health_check.interval_ms", "must be at least 10, got 5"),
        (#""health_check": {"timeout_ms": 0}"#, "health_check.timeout_ms", "must be at least 1, got 0"),
        (#""health_check": {"healthy_threshold": -1}"#, "health_check.healthy_threshold", "must be at least 1, got -1"),
        (#""health_check": {"unhealthy_threshold": 0}"#, "health_check.unhealthy_threshold", "must be at least 1"),
        (#""timeouts": {"idle_ms": -5}"#, "timeouts.idle_ms", "must be at least 1, got -5"),
        (#""timeouts": {"upstream_ms": 86400001}"#, "timeouts.upstream_ms", "must be at most 86400000"),
        (#""timeouts": {"connect_ms": 99999999999999999999}"#, "timeouts.connect_ms", "must be at most 86400000, got 99999999999999999999"),
        (#""timeouts": {"connect_ms": -99999999999999999999}"#, "timeouts.connect_ms", "must be at least 1"),
        (#""limits": {"max_head_bytes": 512}"#, "limits.max_head_bytes", "must be at least 1024, got 512"),
        (#""limits": {"max_header_count": 0}"#, "limits.max_header_count", "must be at least 1, got 0"),
        (#""limits": {"max_target_bytes": 1}"#, "limits.max_target_bytes", "must be at least 16"),
        (#""pool": {"max_idle_per_backend": -1}"#, "pool.max_idle_per_backend", "must be at least 0, got -1"),
    ])
    func outOfRangeNumbers(extra: String, field: String, problem: String) {
        expectError(withBackend(extra), field: field, problem: problem)
    }

    @Test("The health check path must be an absolute request target")
    func healthCheckPathIsChecked() {
        expectError(withBackend(#""health_check": {"path": "health"}"#), field: "health_check.path",
                    problem: #"must start with "/", got "health""#, example: #""path": "/health""#)
        expectError(withBackend(#""health_check": {"path": "/a b"}"#), field: "health_check.path",
                    problem: "must not contain spaces")
        expectError(withBackend(#""health_check": {"path": "/x\r\nHost: evil"}"#), field: "health_check.path",
                    problem: "control")
    }

    // MARK: Unknown keys

    @Test("Unknown keys get a did-you-mean suggestion with an example", arguments: [
        (#""healthcheck": {}"#, "healthcheck", "health_check"),
        (#""healthCheck": {}"#, "healthCheck", "health_check"),
        (#""Listen": ":80""#, "Listen", "listen"),
        (#""timeout": {}"#, "timeout", "timeouts"),
        (#""health_check": {"interval": 1000}"#, "health_check.interval", "interval_ms"),
        (#""health_check": {"intervalMs": 1000}"#, "health_check.intervalMs", "interval_ms"),
        (#""timeouts": {"conect_ms": 1}"#, "timeouts.conect_ms", "connect_ms"),
        (#""limits": {"max_header_cnt": 1}"#, "limits.max_header_cnt", "max_header_count"),
        (#""pool": {"idle_timeout": 1}"#, "pool.idle_timeout", "idle_timeout_ms"),
    ])
    func unknownKeysSuggestTheClosestKey(extra: String, field: String, suggestion: String) {
        expectError(withBackend(extra), field: field, problem: "unknown key; did you mean \"\(suggestion)\"?")
    }

    @Test("The suggestion's example shows the suggested key")
    func suggestionExampleShowsTheSuggestedKey() {
        let error = configError(withBackend(#""health_check": {"interval": 1000}"#))
        #expect(error?.description == #"config.json: health_check.interval: unknown key; did you mean "interval_ms"? (example: "interval_ms": 5000)"#)
    }

    @Test("Unknown keys inside a backend are caught too")
    func unknownBackendKeys() {
        expectError(withBackend(backend: #"{"urls": "http://a"}"#), field: "backends[0].urls",
                    problem: #"did you mean "url"?"#, example: #""url": "http://127.0.0.1:3001""#)
    }

    @Test("An unknown key with no close match lists the valid keys")
    func unknownKeyWithoutSuggestionListsKeys() {
        expectError(withBackend(#""threads": 4"#), field: "threads",
                    problem: #"unknown key; expected one of "listen", "backends", "health_check", "balance", "hash_key", "outlier_detection", "retries", "sticky", "slow_start_ms", "max_connections_per_backend", "queue", "resolve_interval_ms", "try_when_all_down", "send_proxy_protocol", "timeouts", "limits", "pool", "http2", "upstreams", "routes", "path_normalization", "workers""#)
    }

    // MARK: Loading files

    @Test("Loading a file reads and validates it")
    func loadingAFile() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"{"backends": [{"url": "http://127.0.0.1:3001"}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try ConfigLoader.load(path: path).backends.first?.port == 3001)

        try #"{"backends": []"#.write(toFile: path, atomically: true, encoding: .utf8)
        do throws(ConfigError) {
            _ = try ConfigLoader.load(path: path)
            Issue.record("expected an error")
        } catch {
            #expect(error.description.hasPrefix("\(path):1:16: "))
        }
    }

    @Test("A missing config file is named, with what to do about it")
    func missingFileIsExplained() {
        let path = temporaryPath()
        do throws(ConfigError) {
            _ = try ConfigLoader.load(path: path)
            Issue.record("expected an error")
        } catch {
            #expect(error.file == path)
            #expect(error.field == "")
            #expect(error.problem.contains("config file not found; create it, or pass --config PATH"))
            #expect(error.example?.contains("\"backends\"") == true)
            #expect(error.description.hasPrefix("\(path): config file not found"))
        }
    }

    @Test("A relative missing path mentions the working directory")
    func relativeMissingPathMentionsWorkingDirectory() {
        do throws(ConfigError) {
            _ = try ConfigLoader.load(path: "no-such-config-\(UUID().uuidString).json")
            Issue.record("expected an error")
        } catch {
            #expect(error.problem.contains("(looked in \(FileManager.default.currentDirectoryPath))"))
        }
    }

    @Test("A directory instead of a file is explained")
    func directoryIsExplained() {
        do throws(ConfigError) {
            _ = try ConfigLoader.load(path: NSTemporaryDirectory())
            Issue.record("expected an error")
        } catch {
            #expect(error.problem.contains("is a directory"))
        }
    }

    private func temporaryPath() -> String {
        NSTemporaryDirectory() + "proxy-config-test-\(UUID().uuidString).json"
    }

    // MARK: Suggestions

    @Test("Edit distance counts insertions, deletions, substitutions and swaps as one edit each")
    func editDistance() {
        #expect(Suggestion.editDistance("", "abc") == 3)
        #expect(Suggestion.editDistance("listen", "listen") == 0)
        #expect(Suggestion.editDistance("lsiten", "listen") == 1)
        #expect(Suggestion.editDistance("healthcheck", "health_check") == 1)
        #expect(Suggestion.editDistance("kitten", "sitting") == 3)
        #expect(Suggestion.closest(to: "port", among: ["path", "interval_ms"]) == nil)
        #expect(Suggestion.closest(to: "urls", among: ["id", "url"]) == "url")
    }
}

@Suite struct ConfigCommandLineTests {
    private func parse(_ arguments: [String]) throws(CommandLineError) -> CommandLineOptions {
        try CommandLineOptions.parse(arguments)
    }

    private func commandLineError(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        do throws(CommandLineError) {
            let options = try parse(arguments)
            Issue.record("expected an error, parsed \(options)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error.message
        }
    }

    @Test("No arguments means config.json, not explicitly given")
    func noArguments() throws {
        let options = try parse([])
        #expect(options == CommandLineOptions())
        #expect(options.configPath == "config.json")
        #expect(!options.configPathWasGiven && !options.check && !options.help && options.listen == nil)
    }

    @Test("The config path is accepted in all three spellings", arguments: [
        ["--config", "prod.json"], ["--config=prod.json"], ["-c", "prod.json"],
    ])
    func configPathSpellings(arguments: [String]) throws {
        let options = try parse(arguments)
        #expect(options.configPath == "prod.json")
        #expect(options.configPathWasGiven)
    }

    @Test("An inline value may start with a dash")
    func inlineValueMayStartWithADash() throws {
        #expect(try parse(["--config=-odd.json"]).configPath == "-odd.json")
    }

    @Test("Listen is accepted separately or inline", arguments: [["--listen", ":9000"], ["--listen=:9000"]])
    func listenSpellings(arguments: [String]) throws {
        #expect(try parse(arguments).listen == ListenAddress(host: "0.0.0.0", port: 9000))
    }

    @Test("Flags combine in any order")
    func flagsCombine() throws {
        let options = try parse(["--check", "--listen", "[::1]:0", "-c", "a.json", "-h"])
        #expect(options == CommandLineOptions(
            configPath: "a.json", configPathWasGiven: true, listen: ListenAddress(host: "::1", port: 0),
            check: true, help: true))
        #expect(try parse(["--help"]).help)
    }

    @Test("Command line mistakes are explained", arguments: [
        (["--conf", "x.json"], #"unknown option "--conf"; did you mean "--config"?"#),
        (["--lisen", ":80"], #"unknown option "--lisen"; did you mean "--listen"?"#),
        (["-config", "x.json"], #"unknown option "-config"; did you mean "--config"?"#),
        (["--chek"], #"unknown option "--chek"; did you mean "--check"?"#),
        (["--verbose"], #"unknown option "--verbose""#),
        (["-x"], #"unknown option "-x""#),
        (["--config"], "--config needs a value, e.g. --config config.json"),
        (["-c"], "-c needs a value, e.g. --config config.json"),
        (["--config", "--check"], "--config needs a value"),
        (["--config="], "--config needs a value"),
        (["--listen"], "--listen needs a value, e.g. --listen 127.0.0.1:8080"),
        (["--listen", "8080"], #"--listen expects "host:port", ":port" or "[IPv6]:port" (port 0-65535), got "8080": missing ':' before the port"#),
        (["--listen=:99999"], "from 0 to 65535"),
        (["--check=yes"], "--check takes no value"),
        (["--help=1"], "--help takes no value"),
        (["-c", "a.json", "--config", "b.json"], "--config was given more than once"),
        (["--check", "--check"], "--check was given more than once"),
        (["prod.json"], #"unexpected argument "prod.json"; did you mean "--config prod.json"?"#),
        (["serve"], #"unexpected argument "serve""#),
        (["-"], #"unexpected argument "-""#),
    ])
    func commandLineMistakes(arguments: [String], message: String) {
        let actual = commandLineError(arguments)
        #expect(actual?.contains(message) == true, "\(actual ?? "no error")")
    }

    @Test("--workers takes a count, 0 meaning one per CPU")
    func workersOption() throws {
        #expect(try CommandLineOptions.parse(["--workers", "3"]).workers == 3)
        #expect(try CommandLineOptions.parse(["--workers=0"]).workers == 0)
        #expect(commandLineError(["--workers", "many"])?.contains("--workers expects a number from 0 to 1024") == true)
        #expect(commandLineError(["--workers", "5000"])?.contains("--workers expects a number") == true)
    }

    @Test("--to takes the response timeouts by their config names; they need --to")
    func timeoutOptions() throws {
        let options = try CommandLineOptions.parse(["--to", "http://localhost:5173", "--upstream-ms", "120000",
                                                    "--response-idle-ms=5000", "--event-stream-idle-ms", "60000"])
        let config = try QuickStart.config(options)
        #expect(config.timeouts.upstreamMs == 120000)
        #expect(config.timeouts.responseIdleMs == 5000)
        #expect(config.timeouts.eventStreamIdleMs == 60000)
        #expect(try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1"])).timeouts == TimeoutsConfig())
        #expect(commandLineError(["--to", "http://localhost:1", "--upstream-ms", "soon"])?.contains("--upstream-ms expects milliseconds") == true)
        #expect(commandLineError(["--upstream-ms", "100"])?.contains("applies to --to targets; in a config file use \"timeouts\": {\"upstream_ms\": …}") == true)
        // Every timeouts key has its flag, by the same name.
        let all = try CommandLineOptions.parse(["--to", "http://localhost:1", "--connect-ms", "1", "--client-header-ms", "2", "--client-body-ms", "3",
                                                "--idle-ms", "4", "--tunnel-idle-ms", "5"])
        let t = try QuickStart.config(all).timeouts
        #expect(t.connectMs == 1 && t.clientHeaderMs == 2 && t.clientBodyMs == 3 && t.idleMs == 4 && t.tunnelIdleMs == 5)
    }

    @Test("--to: the access log, the Host policy words, path prefixes, --version")
    func gatewayFlags() throws {
        let logged = try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1", "--access-log", "/tmp/a.log", "--access-log-format", "json"]))
        #expect(logged.accessLog.destination == .file("/tmp/a.log") && logged.accessLog.format == .json)
        #expect(try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1", "--access-log", "off"])).accessLog.destination == .off)
        #expect(commandLineError(["--to", "http://localhost:1", "--access-log-format", "jsn"])?.contains(#"did you mean "json"?"#) == true)
        #expect(commandLineError(["--access-log", "x.log"])?.contains("apply to --to targets") == true)
        // A misspelt policy is refused, not sent as every request's Host.
        #expect(commandLineError(["--to", "http://localhost:1", "--host-header", "backnd"])?.contains(#"expects preserve, backend or literal:VALUE, got "backnd"; did you mean "backend"?"#) == true)
        #expect(commandLineError(["--to", "http://localhost:1", "--host-header", "myapp"])?.contains("literal:myapp") == true)
        #expect(try CommandLineOptions.parse(["--to", "http://localhost:1", "--host-header", "literal:myapp"]).hostHeader == .literal("myapp"))
        #expect(try CommandLineOptions.parse(["--to", "http://localhost:1", "--host-header", "app.test:8443"]).hostHeader == .literal("app.test:8443"))
        #expect(commandLineError(["--to", "http://localhost:1", "--host-header", "literal:"])?.contains("needs a host value") == true)
        do {
            _ = try QuickStart.config(CommandLineOptions.parse(["--to", "api=http://localhost:8080"]))
            Issue.record("--to api=URL was accepted")
        } catch {
            #expect(error.message.contains("a path prefix starts with /; write --to /api=http://localhost:8080"), "\(error.message)")
        }
        #expect(try CommandLineOptions.parse(["--version"]).version && CommandLineOptions.parse(["-V"]).version)
        // A directory and a URL for one path: refused, whatever the order.
        let dir = NSTemporaryDirectory()
        for args in [["--to", dir, "--to", "http://localhost:1"], ["--to", "/a=http://localhost:1", "--to", "/a=\(dir)"], ["--to", "/a=\(dir)", "--to", "/a=\(dir)"]] {
            do {
                _ = try QuickStart.config(CommandLineOptions.parse(args))
                Issue.record("\(args) was accepted")
            } catch {
                #expect(error.message.contains("given both a directory and a URL"), "\(args): \(error.message)")
            }
        }
        // An upstream named static keeps its ids; the files' backend takes another.
        let mixed = try QuickStart.config(CommandLineOptions.parse(["--to", dir, "--to", "/static=http://localhost:9000"]))
        #expect(Set(mixed.allBackends.map(\.id)).count == mixed.allBackends.count, "\(mixed.allBackends.map(\.id))")
        #expect(ProxyVersion.current.split(separator: ".").count == 3)
    }

    @Test("--to listens on loopback unless given an address; it tries one connect when all are down")
    func gatewayListensOnLoopback() throws {
        func listeners(_ args: [String], ipv6: Bool = true) throws -> [String] {
            try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1"] + args), ipv6Loopback: ipv6, ipv6Free: true)
                .listeners.map { "\($0.address)" }
        }
        #expect(try listeners([]) == ["127.0.0.1:8080", "[::1]:8080"])
        #expect(try listeners([], ipv6: false) == ["127.0.0.1:8080"])
        #expect(try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1"]), ipv6Loopback: true, ipv6Free: false).listeners.count == 1,
                "[::1] held by another program (a dev server on localhost): IPv4 only")
        #expect(try listeners(["--listen", ":3000"]) == ["127.0.0.1:3000", "[::1]:3000"])
        #expect(try listeners(["--listen", ":0"]) == ["127.0.0.1:0"], "port 0 would be two ports: IPv4 only")
        #expect(try listeners(["--listen", "0.0.0.0:3000"]) == ["0.0.0.0:3000"], "an explicit address exposes it")
        #expect(try listeners(["--listen", "[::]:3000"]) == ["[::]:3000"])
        let https = try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1", "--https"]), ipv6Loopback: true)
        #expect(https.listeners.allSatisfy { $0.tls == .local })
        let config = try QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:1", "--to", "/api=http://localhost:2"]))
        #expect(config.allUpstreams.allSatisfy { $0.balance.tryWhenAllDown }, "dev servers restart: try one connect")
        // With a config file a bare port is still every interface.
        #expect(try Supervisor.applying(CommandLineOptions.parse(["--listen", ":3000"]), to: load(withBackend())).listen.host == "0.0.0.0")
        #expect(try load(withBackend(#""try_when_all_down": true"#)).balance.tryWhenAllDown)
        expectError(withBackend(#""try_when_all_down": 1"#), field: "try_when_all_down", problem: "expected true")
    }

    @Test("A backend that is the proxy's own listener is found before start")
    func selfForwardingBackends() throws {
        func loops(_ args: [String]) throws -> [String] {
            try SelfForwarding.backendsPointingAtTheListener(QuickStart.config(CommandLineOptions.parse(args))).map(\.id)
        }
        // The --help example as it used to read: the API and the gateway on one port.
        #expect(try loops(["--to", "http://localhost:5173", "--to", "/api=http://localhost:8080", "--listen", ":8080"]) == ["api1"])
        #expect(try loops(["--to", "http://127.0.0.1:8080", "--listen", "127.0.0.1:8080"]) == ["backend1"])
        #expect(try loops(["--to", "http://[::1]:8080", "--listen", "[::]:8080"]) == ["backend1"])
        #expect(try loops(["--to", "http://localhost:5173", "--to", "/api=http://localhost:8080", "--listen", ":3000"]).isEmpty)
        #expect(try loops(["--to", "http://localhost:8080", "--listen", "127.0.0.1:0"]).isEmpty)
        #expect(try loops(["--to", "http://db.internal:8080", "--listen", ":8080"]).isEmpty)
        let problem = try #require(SelfForwarding.problem(QuickStart.config(CommandLineOptions.parse(["--to", "http://localhost:8080", "--listen", ":8080"]))))
        #expect(problem.contains("backend1 (http://localhost:8080) is this proxy's own listen address"))
    }

    @Test("workers and shutdown_grace_ms are read, with their defaults and ranges")
    func workersAndGraceConfig() throws {
        let defaults = try load(withBackend())
        #expect(defaults.workers == 0 && defaults.shutdownGraceMs == 30000)
        let set = try load(withBackend(#""workers": 2, "shutdown_grace_ms": 500"#))
        #expect(set.workers == 2 && set.shutdownGraceMs == 500)
        expectError(withBackend(#""workers": -1"#), field: "workers", problem: "0")
    }

    @Test("Usage starts with the synopsis and explains each option")
    func usageText() {
        let usage = CommandLineOptions.usage
        #expect(usage.hasPrefix("usage: proxy [--config PATH] [--listen ADDR] [--workers N] [--check] [--help] [--version]\n"))
        for option in ["--config PATH", "--listen ADDR", "--workers N", "--check", "--help", "examples:", "SIGHUP"] {
            #expect(usage.contains(option))
        }
    }
}

/// Upstreams, routes and the one-line start.
struct RoutingConfigTests {
    private let api = #""upstreams": {"api": {"backends": [{"url": "http://127.0.0.1:8081"}]}}"#

    @Test func routesAndUpstreamsAreRead() throws {
        let config = try load(withBackend(api + #", "routes": [{"host": "*.Dev.Local", "path": "/api/", "upstream": "api", "strip_prefix": true, "host_header": "backend"}]"#))
        #expect(config.upstreams.map(\.name) == ["api"])
        #expect(config.upstreams[0].backends.map(\.id) == ["api1"], "default ids in a named upstream: <name><N>")
        #expect(config.routes == [RouteConfig(host: .wildcard(".dev.local"), path: "/api/", upstream: "api", stripPrefix: true, hostHeader: .backend)])
        #expect(config.allUpstreams.map(\.name) == ["default", "api"])
        #expect(config.routes[0].strippedPrefix == "/api")
    }

    @Test func aRouteToAnUnknownUpstreamIsNamedByIndexWithASuggestion() {
        expectError(withBackend(api + #", "routes": [{"path": "/a", "upstream": "api"}, {"path": "/b", "upstream": "apii"}]"#),
                    field: "routes[1].upstream", problem: #"no upstream named "apii"; did you mean "api"?"#)
        expectError(withBackend(api + #", "routes": [{"path": "/a"}]"#), field: "routes[0].upstream", problem: "missing")
        expectError(withBackend(api + #", "routes": [{"path": "a", "upstream": "api"}]"#), field: "routes[0].path", problem: "must start with")
        expectError(withBackend(api + #", "routes": [{"host": "*.", "upstream": "api"}]"#), field: "routes[0].host", problem: "*.example.com")
        expectError(withBackend(api + #", "routes": [{"host": "a.test:8080", "upstream": "api"}]"#), field: "routes[0].host", problem: "no port")
        expectError(withBackend(api + #", "routes": [{"upstream": "api", "strip_prefix": "yes"}]"#), field: "routes[0].strip_prefix", problem: "true or false")
    }

    @Test func aRouteMayHaveItsOwnResponseTimeouts() throws {
        let config = try load(withBackend(api + #", "timeouts": {"upstream_ms": 1000, "response_idle_ms": 2000}, "routes": [{"path": "/poll", "upstream": "api", "timeouts": {"upstream_ms": 90000, "event_stream_idle_ms": 5000}}]"#))
        let route = config.routes[0].timeouts
        #expect(route == RouteTimeoutsConfig(upstreamMs: 90000, eventStreamIdleMs: 5000))
        let effective = route.applied(to: config.timeouts)
        #expect(effective.upstreamMs == 90000 && effective.responseIdleMs == 2000 && effective.eventStreamIdleMs == 5000)
        expectError(withBackend(api + #", "routes": [{"path": "/p", "upstream": "api", "timeouts": {"upstream": 5}}]"#),
                    field: "routes[0].timeouts.upstream", problem: "upstream_ms")
        expectError(withBackend(api + #", "routes": [{"path": "/p", "upstream": "api", "timeouts": {"upstream_ms": 0}}]"#),
                    field: "routes[0].timeouts.upstream_ms", problem: "1")
    }

    @Test func pathNormalizationIsReadWithDefaultsAndChecked() throws {
        #expect(try load(withBackend()).pathNormalization == PathNormalizationConfig(mergeSlashes: true, escapedSlashes: .keep, forward: .original))
        let config = try load(withBackend(#""path_normalization": {"merge_slashes": false, "escaped_slashes": "reject", "forward": "normalized"}"#))
        #expect(config.pathNormalization == PathNormalizationConfig(mergeSlashes: false, escapedSlashes: .reject, forward: .normalized))
        expectError(withBackend(#""path_normalization": {"escaped_slashes": "rejects"}"#), field: "path_normalization.escaped_slashes",
                    problem: #"expected one of "keep", "reject", "decode", got "rejects"; did you mean "reject"?"#)
        expectError(withBackend(#""path_normalization": {"forward": "normalised"}"#), field: "path_normalization.forward",
                    problem: #"did you mean "normalized"?"#, example: #""forward": "original""#)
        expectError(withBackend(#""path_normalization": {"merge_slashes": "yes"}"#), field: "path_normalization.merge_slashes",
                    problem: "expected true or false")
        expectError(withBackend(#""path_normalization": {"merge_slash": true}"#), field: "path_normalization.merge_slash",
                    problem: #"did you mean "merge_slashes"?"#)
    }

    @Test func aRoutePathThatNoNormalisedPathCanMatchIsRefusedWithTheOneThatWould() throws {
        for (path, fixed) in [("/a/../api", "/api"), ("//api", "/api"), ("/%61pi/", "/api/"), ("/api/.", "/api/"), ("/a%2fb", "/a%2Fb")] {
            expectError(withBackend(api + #", "routes": [{"path": "\#(path)", "upstream": "api"}]"#), field: "routes[0].path",
                        problem: "is not a normalised path", example: #""path": "\#(fixed)""#)
        }
        expectError(withBackend(api + #", "routes": [{"path": "/a%zz", "upstream": "api"}]"#), field: "routes[0].path",
                    problem: "invalid percent-encoding")
        expectError(withBackend(api + #", "path_normalization": {"escaped_slashes": "reject"}, "routes": [{"path": "/a%2Fb", "upstream": "api"}]"#),
                    field: "routes[0].path", problem: "encoded slash")
        // Without merging, "//" is part of the normal form.
        let kept = try load(withBackend(api + #", "routes": [{"path": "/a//b", "upstream": "api"}], "path_normalization": {"merge_slashes": false}"#))
        #expect(kept.routes[0].path == "/a//b")
    }

    @Test func poolsAreCheckedAsAWhole() {
        expectError(#"{"upstreams": {"api": {"backends": [{"url": "http://127.0.0.1:1"}]}}}"#, field: "routes",
                    problem: "routes are needed")
        expectError(#"{"backends": [{"id": "x", "url": "http://127.0.0.1:1"}], "upstreams": {"api": {"backends": [{"id": "x", "url": "http://127.0.0.1:2"}]}}}"#,
                    field: "upstreams.api.backends[0].id", problem: "already used by backends[0]")
        expectError(withBackend(#""upstreams": {"default": {"backends": [{"url": "http://127.0.0.1:2"}]}}"#),
                    field: "upstreams.default", problem: "give this upstream another name")
        expectError(withBackend(#""upstreams": {"a b": {"backends": [{"url": "http://127.0.0.1:2"}]}}"#),
                    field: "upstreams.a b", problem: "upstream names may use")
        expectError(withBackend(#""upstreams": {"api": {}}"#), field: "upstreams.api.backends", problem: "missing")
    }

    @Test func aNamedUpstreamsHealthCheckStartsFromTheTopLevelOne() throws {
        // health_check comes after upstreams in the file on purpose.
        let config = try load(#"{"upstreams": {"api": {"backends": [{"url": "http://127.0.0.1:1"}], "health_check": {"interval_ms": 250}}, "web": {"backends": [{"url": "http://127.0.0.1:2"}]}}, "routes": [{"upstream": "api"}], "health_check": {"path": null, "timeout_ms": 700}}"#)
        let api = config.upstreams[0].healthCheck, web = config.upstreams[1].healthCheck
        #expect(api.path == nil && api.timeoutMs == 700 && api.intervalMs == 250)
        #expect(web == config.healthCheck)
    }

    @Test func aReloadSeesABackendMovingBetweenPools() throws {
        let before = try load(#"{"upstreams": {"a": {"backends": [{"id": "x", "url": "http://127.0.0.1:1"}, {"id": "y", "url": "http://127.0.0.1:2"}]}, "b": {"backends": [{"id": "z", "url": "http://127.0.0.1:3"}]}}, "routes": [{"upstream": "a"}]}"#)
        let after = try load(#"{"upstreams": {"a": {"backends": [{"id": "x", "url": "http://127.0.0.1:1"}]}, "b": {"backends": [{"id": "y", "url": "http://127.0.0.1:2"}, {"id": "z", "url": "http://127.0.0.1:3"}]}}, "routes": [{"upstream": "a"}]}"#)
        let shared = before.allBackends.map { b in
            SharedBackend(config: b, address: SocketAddress(ip: "127.0.0.1", port: b.port)!, workers: 1)
        }
        let changes = ConfigChanges(from: before, oldBackends: shared, to: after, newBackends: shared)
        #expect(!changes.isEmpty && changes.summary.contains("upstreams"), "\(changes.summary)")
    }

    @Test func aReloadThatChangesOnlyTheResolverIsAChange() throws {
        let before = try load(#"{"backends": [{"url": "http://api.internal:1"}], "resolver": {"servers": ["127.0.0.1"]}}"#)
        let after = try load(#"{"backends": [{"url": "http://api.internal:1"}], "resolver": {"servers": ["127.0.0.2"]}}"#)
        let shared = before.allBackends.map { b in SharedBackend(config: b, address: SocketAddress(ip: "127.0.0.1", port: 1)!, workers: 1) }
        let changes = ConfigChanges(from: before, oldBackends: shared, to: after, newBackends: shared)
        #expect(changes.summary == "changed resolver", "\(changes.summary)")
    }

    @Test func aNullHealthPathMeansConnectOnlyProbes() throws {
        let config = try load(withBackend(#""health_check": {"path": null}"#))
        #expect(config.healthCheck.path == nil)
    }

    @Test func theOneLinerBuildsPoolsAndRoutes() throws {
        let options = try CommandLineOptions.parse(["--to", "http://localhost:5173", "--to", "/api=http://localhost:8080",
                                                    "--to", "/api=http://localhost:8081", "--host-header", "backend"])
        let config = try QuickStart.config(options)
        #expect(config.backends.map(\.url) == ["http://localhost:5173"])
        #expect(config.upstreams.map(\.name) == ["api"] && config.upstreams[0].backends.map(\.id) == ["api1", "api2"])
        #expect(config.routes.first == RouteConfig(path: "/api", upstream: "api", hostHeader: .backend))
        #expect(config.healthCheck.path == nil, "dev servers are checked by connecting")
        #expect(config.listen.port == 8080)
        #expect(commandLineErrorText(["--to", "http://a:1", "--config", "x.json"])?.contains("without --config") == true)
        #expect(commandLineErrorText(["--host-header", "backend"])?.contains("apply to --to") == true)
        #expect(throws: CommandLineError.self) { try QuickStart.config(try CommandLineOptions.parse(["--to", "/api"])) }
        // An upstream named after /backend must not share ids with the default pool's backend1…
        let clash = try QuickStart.config(try CommandLineOptions.parse(["--to", "http://a:1", "--to", "/backend=http://b:2"]))
        let ids = clash.allBackends.map(\.id)
        #expect(Set(ids).count == ids.count, "\(ids)")
        #expect(commandLineErrorText(["--to", "http://a:1", "--host-header", "a b"])?.contains("--host-header expects") == true)
        // An https:// dev server gets TLS, verified against the system's store.
        let secure = try QuickStart.config(try CommandLineOptions.parse(["--to", "https://x"]))
        #expect(secure.backends.first?.port == 443 && secure.backends.first?.tls == BackendTLSConfig())
    }

    private func commandLineErrorText(_ arguments: [String]) -> String? {
        do throws(CommandLineError) {
            _ = try CommandLineOptions.parse(arguments)
            return nil
        } catch {
            return error.message
        }
    }
}
