/// `access_log`: one line per request, written off the loop threads.
public struct AccessLogConfig: Sendable, Equatable {
    public enum Destination: Sendable, Equatable {
        case off
        case stdout
        case stderr
        /// Appended to; reopened on SIGHUP (log rotation).
        case file(String)
    }

    public enum Format: String, Sendable, Equatable, CaseIterable {
        /// nginx's and Apache's `combined`, then the request id, upstream and timings.
        case combined
        /// One JSON object per line.
        case json
    }

    public var destination: Destination
    public var format: Format
    /// Each worker's buffer; a full buffer is handed to the writer thread at once.
    public var bufferBytes: Int
    /// A buffer that is not full is handed over after this long.
    public var flushMs: Int
    /// Lines waiting for the writer at most (bytes, all workers); beyond it new lines are dropped
    /// and counted rather than stalling traffic behind a slow disk or a blocked pipe.
    public var maxPendingBytes: Int

    public init(destination: Destination = .stdout, format: Format = .combined, bufferBytes: Int = 32 * 1024,
                flushMs: Int = 500, maxPendingBytes: Int = 8 << 20) {
        self.destination = destination
        self.format = format
        self.bufferBytes = bufferBytes
        self.flushMs = flushMs
        self.maxPendingBytes = maxPendingBytes
    }

    public var isEnabled: Bool { destination != .off }

    /// The `path` as written in the file.
    public var pathText: String? {
        switch destination {
        case .off: nil
        case .stdout: "stdout"
        case .stderr: "stderr"
        case .file(let path): path
        }
    }
}

/// `admin`: the proxy's own endpoints. `/_health` is answered to every client on the main
/// listener (load balancers in front probe it); metrics and the status page only to loopback
/// clients there, unless `listen` gives them their own listener — then they are served there to
/// anyone who can reach it, and on the main listener those paths go to the backends like any
/// other. A path set to `null` turns that endpoint off.
public struct AdminConfig: Sendable, Equatable {
    public var listen: ListenAddress?
    public var healthPath: String?
    public var metricsPath: String?
    public var statusPath: String?
    public var statusJSONPath: String?
    /// The runtime API's prefix (`/_admin/backends/{id}/drain` …); nil turns it off.
    public var apiPath: String? = "/_admin"
    /// The request inspector's page; its JSON is under `PATH/api/` (served only while
    /// `inspect.enabled`; nil turns it off).
    public var inspectPath: String? = "/_inspect"

    public init(listen: ListenAddress? = nil, healthPath: String? = "/_health", metricsPath: String? = "/_metrics",
                statusPath: String? = "/_status", statusJSONPath: String? = "/_status.json") {
        self.listen = listen
        self.healthPath = healthPath
        self.metricsPath = metricsPath
        self.statusPath = statusPath
        self.statusJSONPath = statusJSONPath
    }
}

extension AccessLogConfig: ConfigSection {
    static var defaults: AccessLogConfig { AccessLogConfig() }

    static var fields: [ConfigField<AccessLogConfig>] {
        [
            ConfigField(key: "path", example: "\"stdout\"") { log, value, at throws(ConfigError) in
                if case .null = value {
                    log.destination = .off
                    return
                }
                let path = try at.string(value)
                switch path {
                case "stdout": log.destination = .stdout
                case "stderr": log.destination = .stderr
                case "": throw at.error("must not be empty; use null to turn the access log off, or \"stdout\"")
                default: log.destination = .file(path)
                }
            },
            ConfigField(key: "format", example: "\"combined\"") { log, value, at throws(ConfigError) in
                let text = try at.string(value)
                guard let format = AccessLogConfig.Format(rawValue: text) else {
                    var problem = "expected \"combined\" or \"json\", got \(JSONValue.quoted(text))"
                    if let match = Suggestion.closest(to: text, among: Format.allCases.map(\.rawValue)) {
                        problem += "; " + Suggestion.didYouMean(match)
                    }
                    throw at.error(problem)
                }
                log.format = format
            },
            .integer("buffer_bytes", \.bufferBytes, 4096...(16 << 20)),
            .integer("flush_ms", \.flushMs, 1...60_000),
            .integer("max_pending_bytes", \.maxPendingBytes, 65536...(1 << 30)),
        ]
    }

    /// `"access_log": null` is short for `{"path": null}`.
    static func decodeOrOff(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> AccessLogConfig {
        if case .null = value { return AccessLogConfig(destination: .off) }
        return try decode(value, at: location)
    }
}

extension AdminConfig: ConfigSection {
    static var defaults: AdminConfig { AdminConfig() }

    static var fields: [ConfigField<AdminConfig>] {
        [
            ConfigField(key: "listen", example: "\"127.0.0.1:9901\"") { admin, value, at throws(ConfigError) in
                if case .null = value {
                    admin.listen = nil
                    return
                }
                let text = try at.string(value)
                do throws(AddressSyntaxError) {
                    admin.listen = try ListenAddress.parseExplained(text)
                } catch {
                    throw at.error("expected \(ListenAddress.expectedForms), got \(JSONValue.quoted(text)): \(error.problem)")
                }
            },
            path("health_path", \.healthPath),
            path("metrics_path", \.metricsPath),
            path("status_path", \.statusPath),
            path("status_json_path", \.statusJSONPath),
            path("api_path", \.apiPath),
            path("inspect_path", \.inspectPath),
        ]
    }

    /// An endpoint's path: `/` and printable ASCII (it is compared with request targets byte for
    /// byte), or `null` to turn the endpoint off.
    private static func path(_ key: String, _ keyPath: WritableKeyPath<AdminConfig, String?>) -> ConfigField<AdminConfig> {
        ConfigField(key: key, example: JSONValue.quoted(defaults[keyPath: keyPath] ?? "/")) { admin, value, at throws(ConfigError) in
            if case .null = value {
                admin[keyPath: keyPath] = nil
                return
            }
            let path = try at.string(value)
            guard path.hasPrefix("/"), path.count > 1 else {
                throw at.error("must start with \"/\" and name a path, got \(JSONValue.quoted(path))")
            }
            // It is also written into the status page's script and links: nothing that needs escaping there.
            guard path.utf8.allSatisfy({ (0x21...0x7E).contains($0) && !"?#\"'<>\\`".utf8.contains($0) }) else {
                throw at.error("must be printable ASCII without spaces or any of ? # \" ' < > \\ `, got \(JSONValue.quoted(path))")
            }
            admin[keyPath: keyPath] = path
        }
    }

    /// Every endpoint's path with its key, for the uniqueness check.
    public var namedPaths: [(key: String, path: String)] {
        [("health_path", healthPath), ("metrics_path", metricsPath), ("status_path", statusPath),
         ("status_json_path", statusJSONPath), ("api_path", apiPath), ("inspect_path", inspectPath)].compactMap { k, p in p.map { (k, $0) } }
    }
}
