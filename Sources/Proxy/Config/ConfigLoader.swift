import Glibc

/// A config file the proxy cannot use, said so that it can be fixed without reading the source:
/// which file, which field, what is wrong and what a right value looks like.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// JSON path of the offending value (`backends[1].url`, `health_check.interval_ms`; array
    /// indices are 0-based); "" for whole-file errors.
    public var field: String
    public var problem: String
    /// A right value as it would be written in the file (`"url": "http://127.0.0.1:3001"`).
    public var example: String?
    /// Position of a JSON syntax error; `nil` for errors about well-formed JSON.
    public var line: Int?
    public var column: Int?

    public init(
        file: String, field: String, problem: String, example: String? = nil,
        line: Int? = nil, column: Int? = nil
    ) {
        self.file = file
        self.field = field
        self.problem = problem
        self.example = example
        self.line = line
        self.column = column
    }

    /// `config.json: backends[1].url: expected an http URL … (example: "url": "http://127.0.0.1:3001")`,
    /// or `config.json:3:14: expected ',' or '}' after object member, found '"'` — the `file:line:col`
    /// form editors and terminals turn into links.
    public var description: String {
        var text = file
        if let line, let column { text += ":\(line):\(column)" }
        text += ": "
        if !field.isEmpty { text += field + ": " }
        text += problem
        if let example { text += " (example: \(example))" }
        return text
    }
}

/// Reads and validates the JSON config file.
///
/// Validation is strict on purpose: an unknown key is an error (with a suggestion), not ignored,
/// because a misspelt `"helth_check"` silently falling back to defaults is worse than refusing to
/// start. Only the first problem is reported, at its place in the file.
public enum ConfigLoader {
    /// Config files are small; anything bigger is almost certainly the wrong file.
    static let maxFileBytes = 1 << 20

    /// The smallest useful config, shown when there is nothing else to go on.
    static var minimalExample: String { "{\"backends\": \(BackendEntry.listExample)}" }

    public static func load(path: String) throws(ConfigError) -> ProxyConfig {
        try parse(try readFile(path), file: path)
    }

    /// Parses and validates config text; `file` is only used in messages.
    public static func parse(_ bytes: [UInt8], file: String) throws(ConfigError) -> ProxyConfig {
        let root = ConfigLocation(file: file, path: "", example: minimalExample)
        if bytes.allSatisfy(JSONValue.isWhitespace) {
            throw root.error("the file is empty")
        }
        let document: JSONValue
        do throws(JSONSyntaxError) {
            document = try JSONValue.parse(bytes)
        } catch {
            throw ConfigError(file: file, field: "", problem: error.message, line: error.line, column: error.column)
        }
        var config = try ProxyConfig.decode(document, at: root)
        if case .object(let members) = document, let backends = members.first(where: { $0.0 == "backends" })?.1,
           config.backendTLS != BackendTLSConfig() {
            // Again, now that `backend_tls` (which may come later in the file) is known.
            config.backends = try BackendEntry.decodeList(backends, at: root.member("backends", example: BackendEntry.listExample),
                                                          defaultTLS: config.backendTLS)
        }
        if case .object(let members) = document, let upstreams = members.first(where: { $0.0 == "upstreams" })?.1 {
            // Again, now that the top-level health_check (which may come later in the file) is
            // known: each upstream's own health_check starts from it.
            config.upstreams = try UpstreamEntry.decodeMap(upstreams, at: root.member("upstreams", example: UpstreamEntry.mapExample),
                                                           baseHealth: config.healthCheck)
        }
        try config.balance.check(at: root)
        if config.backends.isEmpty && (config.balance.policy != .roundRobin || config.balance.hashKey != nil) {
            // The top-level policy is the default pool's; upstreams do not inherit it.
            throw root.member("balance", example: BalanceConfig.policyExample)
                .error("applies to the top-level \"backends\" (the default pool), and there are none; set \"balance\" in each upstream")
        }
        addStaticUpstreams(&config)
        try checkRouting(config, at: root)
        try checkAccessLog(config.accessLog, at: root)
        try checkGlobalLimits(config, at: root)
        try checkClaimKeys(config, at: root)
        return config
    }

    /// Each `static` route gets an upstream of its own, `static:ROUTE`, with one backend that is
    /// its files: never probed (always healthy), never looked up (an IP literal it never
    /// connects to).
    static func addStaticUpstreams(_ config: inout ProxyConfig) {
        for i in config.routes.indices {
            guard let files = config.routes[i].staticFiles, config.routes[i].upstream.isEmpty else { continue }
            var name = "static:" + config.routes[i].label
            var n = 2
            while config.allUpstreams.contains(where: { $0.name == name }) { name = "static:\(config.routes[i].label)-\(n)"; n += 1 }
            var k = i + 1
            while config.allBackends.contains(where: { $0.id == "static\(k)" }) { k += 1 }
            var backend = BackendConfig(id: "static\(k)", url: files.url, host: "127.0.0.1", port: 1)
            backend.staticFiles = files
            config.upstreams.append(UpstreamConfig(name: name, backends: [backend],
                                                   healthCheck: HealthCheckConfig(path: nil, intervalMs: 3_600_000, timeoutMs: 1000,
                                                                                  healthyThreshold: 1, unhealthyThreshold: 1)))
            config.routes[i].upstream = name
        }
    }

    /// A `jwt:CLAIM` rate-limit key needs the route's `auth.jwt` (the claim comes from the
    /// checked token).
    private static func checkClaimKeys(_ config: ProxyConfig, at root: ConfigLocation) throws(ConfigError) {
        let policies = config.routes.enumerated().map { i, r in
            (r.policy.merged(over: config.policy), root.member("routes", example: "[]").element(i, example: "{}"))
        } + (config.backends.isEmpty ? [] : [(config.policy, root.member("policy", example: "{}"))])
        for (policy, place) in policies {
            guard let limit = policy.rateLimit, limit.rate > 0, case .claim = limit.key else { continue }
            if policy.auth?.jwt == nil {
                throw place.member("rate_limit", example: RateLimitConfig.example).member("key", example: "\"jwt:sub\"")
                    .error("a \"jwt:\" key counts by a claim of the token \"auth\": {\"jwt\": …} checks; this route has no JWT auth")
            }
        }
    }

    /// A `scope: "global"` rate limit counts in Redis: `redis` must say where.
    private static func checkGlobalLimits(_ config: ProxyConfig, at root: ConfigLocation) throws(ConfigError) {
        guard config.redis == nil else { return }
        let place: ConfigLocation? = config.policy.rateLimit?.scope == .global
            ? root.member("policy", example: "{}").member("rate_limit", example: RateLimitConfig.example)
            : config.routes.indices.first { config.routes[$0].policy.rateLimit?.scope == .global }.map {
                root.member("routes", example: "[]").element($0, example: "{}").member("rate_limit", example: RateLimitConfig.example)
            }
        if let place {
            throw place.member("scope", example: "\"global\"").error("\"global\" counts in Redis: add a top-level \"redis\": \(RedisConfig.example)")
        }
    }

    /// What needs the whole file: a backend to send something to, routes naming pools that exist,
    /// backend ids unique across pools.
    private static func checkRouting(_ config: ProxyConfig, at root: ConfigLocation) throws(ConfigError) {
        // Checked after decoding so a missing key and an empty list get the same message.
        guard !config.allBackends.isEmpty else {
            throw root.member("backends", example: BackendEntry.listExample)
                .error("at least one backend is required")
        }
        if !config.backends.isEmpty, let clash = config.upstreams.first(where: { $0.name == UpstreamConfig.defaultName }) {
            throw root.member("upstreams", example: UpstreamEntry.mapExample).member(clash.name, example: UpstreamEntry.example)
                .error("\"default\" is the pool made of the top-level \"backends\"; give this upstream another name")
        }
        if config.routes.isEmpty && config.backends.isEmpty {
            throw root.member("routes", example: RouteEntry.listExample)
                .error("with no top-level \"backends\", routes are needed to send requests to the upstreams")
        }
        let names = config.allUpstreams.map(\.name)
        for (index, route) in config.routes.enumerated() where !names.contains(route.upstream) {
            let at = root.member("routes", example: RouteEntry.listExample).element(index, example: RouteEntry.example)
                .member("upstream", example: JSONValue.quoted(names.first ?? "api"))
            var problem = "no upstream named \(JSONValue.quoted(route.upstream))"
            if let match = Suggestion.closest(to: route.upstream, among: names) {
                problem += "; " + Suggestion.didYouMean(match)
            } else {
                problem += "; the upstreams are " + names.map { JSONValue.quoted($0) }.joined(separator: ", ")
                    + (config.backends.isEmpty ? "" : " (\"default\" is the top-level \"backends\")")
            }
            throw at.error(problem)
        }
        try checkRoutePaths(config, at: root)
        // Compression states Vary, Content-Encoding and ETag on the responses it touches: a rule
        // changing them would send a body its head misdescribes (or a cache a wrong Vary).
        func compressionClash(_ rules: HeaderRulesConfig?) -> String? {
            guard let rules else { return nil }
            return (rules.assignments.map(\.name) + rules.remove).first { ["vary", "content-encoding", "etag"].contains($0.lowercased()) }
        }
        for (index, route) in config.routes.enumerated() where route.compress.resolved(over: config.compress) != nil {
            if let clash = compressionClash(route.policy.merged(over: config.policy).responseHeaders) {
                throw root.member("routes", example: RouteEntry.listExample).element(index, example: RouteEntry.example)
                    .member("response_headers", example: HeaderRulesConfig.example)
                    .error("\(clash) is managed by \"compress\" on this route; leave it to the backend, or turn compression off for the route with \"compress\": false")
            }
        }
        // The default pool's route (the top-level backends) takes the top-level policy and compress.
        if config.compress != nil && !config.backends.isEmpty, let clash = compressionClash(config.policy.responseHeaders) {
            throw root.member("policy", example: PolicyConfig.example).member("response_headers", example: HeaderRulesConfig.example)
                .error("\(clash) is managed by the top-level \"compress\"; leave it to the backend, or set it on routes that turn compression off")
        }
        if config.inspect.enabled && config.inspect.maxMemoryBytes < 4 * config.inspect.maxBodyBytes {
            throw root.member("inspect", example: InspectConfig.example).member("max_memory_bytes", example: "67108864")
                .error("\(config.inspect.maxMemoryBytes) holds fewer than two exchanges of max_body_bytes (\(config.inspect.maxBodyBytes)) each way; raise it to at least \(4 * config.inspect.maxBodyBytes) or lower max_body_bytes")
        }
        // A route's own CORS fields and a response rule naming them would both be sent.
        for (index, route) in config.routes.enumerated() {
            let policy = route.policy.merged(over: config.policy)
            guard policy.cors?.origins.isEmpty == false, let rules = policy.responseHeaders else { continue }
            if let clash = (rules.assignments.map(\.name) + rules.remove).first(where: { $0.lowercased().hasPrefix("access-control-") }) {
                throw root.member("routes", example: RouteEntry.listExample).element(index, example: RouteEntry.example)
                    .member("response_headers", example: HeaderRulesConfig.example)
                    .error("\(clash) is set by the route's \"cors\"; change it there (or turn \"cors\" off for this route with \"cors\": false)")
            }
        }
        var seen: [String: String] = [:]
        for (key, path) in config.admin.namedPaths {
            if let first = seen[path] {
                throw root.member("admin", example: AdminConfig.example).member(key, example: "\"/_\(key.replacing("_path", with: ""))\"")
                    .error("\(JSONValue.quoted(path)) is already admin.\(first); each endpoint needs its own path")
            }
            seen[path] = key
        }
        var owner: [String: String] = [:]
        for upstream in config.allUpstreams {
            for (index, b) in upstream.backends.enumerated() {
                let place = upstream.name == UpstreamConfig.defaultName && !config.backends.isEmpty
                    ? "backends[\(index)]" : "upstreams.\(upstream.name).backends[\(index)]"
                if let first = owner[b.id] {
                    throw ConfigError(file: root.file, field: place + ".id",
                                      problem: "\(JSONValue.quoted(b.id)) is already used by \(first); backend ids must be unique across upstreams",
                                      example: "\"id\": \"\(upstream.name)-\(index + 1)\"")
                }
                owner[b.id] = place
            }
        }
    }

    /// Requests are matched on the normal form of their path (`path_normalization`), so a route
    /// path that is not in that form (`/a/../b`, `/a//b`, `/%61pi`) could never match: refused,
    /// with the form that would.
    private static func checkRoutePaths(_ config: ProxyConfig, at root: ConfigLocation) throws(ConfigError) {
        let normalizer = config.pathNormalization.normalizer
        for (index, route) in config.routes.enumerated() {
            let at = root.member("routes", example: RouteEntry.listExample).element(index, example: RouteEntry.example)
                .member("path", example: "\"/api\"")
            var bytes = Array(route.path.utf8)
            let normal: PathNormalizer.Result
            do throws(HTTPParseError) {
                normal = try normalizer.normalize(&bytes, target: 0..<bytes.count)
            } catch {
                throw at.error("\(JSONValue.quoted(route.path)): \(error.reason) (see \"path_normalization\")")
            }
            if normal.rewritten {
                let fixed = String(decoding: bytes[normal.path], as: UTF8.self)
                throw ConfigError(file: root.file, field: at.path,
                                  problem: "\(JSONValue.quoted(route.path)) is not a normalised path, and requests are matched on "
                                      + "normalised paths (dot segments removed, unreserved characters decoded"
                                      + (config.pathNormalization.mergeSlashes ? ", slashes merged" : "")
                                      + "), so it could never match",
                                  example: "\"path\": \(JSONValue.quoted(fixed))")
            }
        }
    }

    /// A worker hands over whole buffers: a queue bound smaller than two of them would drop
    /// every line under load.
    private static func checkAccessLog(_ log: AccessLogConfig, at root: ConfigLocation) throws(ConfigError) {
        guard log.maxPendingBytes >= 2 * log.bufferBytes else {
            throw root.member("access_log", example: AccessLogConfig.example)
                .member("max_pending_bytes", example: String(max(2 * log.bufferBytes, AccessLogConfig().maxPendingBytes)))
                .error("must be at least twice access_log.buffer_bytes (\(log.bufferBytes)), got \(log.maxPendingBytes): "
                    + "workers hand the log thread whole buffers")
        }
    }

    // MARK: Reading the file

    private static func readFile(_ path: String) throws(ConfigError) -> [UInt8] {
        func failure(_ problem: String, example: String? = nil) -> ConfigError {
            ConfigError(file: path, field: "", problem: problem, example: example)
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case ENOENT:
                let place = path.hasPrefix("/") ? "" : " (looked in \(currentDirectory()))"
                throw failure("config file not found\(place); create it, or pass --config PATH",
                              example: minimalExample)
            case EACCES:
                throw failure("permission denied; make the file readable by the user running the proxy")
            default:
                throw failure("cannot open the config file: \(systemMessage(code))")
            }
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFDIR {
            throw failure("is a directory; pass the path of the JSON config file with --config PATH")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return bytes }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw failure("cannot read the config file: \(systemMessage(code))")
            }
            bytes.append(contentsOf: chunk[..<count])
            if bytes.count > maxFileBytes {
                throw failure("is larger than \(maxFileBytes / 1024) KiB; is this the right file?")
            }
        }
    }

    private static func currentDirectory() -> String {
        guard let buffer = getcwd(nil, 0) else { return "the current directory" }
        defer { free(buffer) }
        return String(cString: buffer)
    }

    private static func systemMessage(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}

// MARK: - Mapping JSON onto the model

/// Sanity caps: far beyond any reasonable setting, low enough that arithmetic on the values
/// (milliseconds to nanoseconds, buffer sizes) cannot overflow.
private let maxMilliseconds = 86_400_000  // 24 hours
private let maxBytes = 16 << 20
private let maxCount = 100_000

/// A JSON object in the config file that maps onto a model struct. The field table is the one
/// place a key is named: decoding, unknown-key suggestions and examples all come from it.
protocol ConfigSection {
    /// The defaults; keys absent from the file keep these values. (A requirement of its own
    /// because the models' all-defaulted memberwise `init` cannot satisfy an `init()` requirement.)
    static var defaults: Self { get }
    /// Every accepted key, in documentation order (suggestions prefer earlier keys on ties).
    static var fields: [ConfigField<Self>] { get }
}

/// One accepted key: its name, a right value as JSON text, and how it updates the model.
struct ConfigField<Model> {
    let key: String
    let example: String
    let apply: (inout Model, JSONValue, ConfigLocation) throws(ConfigError) -> Void
}

extension ConfigField where Model: ConfigSection {
    /// A whole number within `range`; the default value doubles as the example.
    static func integer(_ key: String, _ keyPath: WritableKeyPath<Model, Int>, _ range: ClosedRange<Int>) -> Self {
        ConfigField(key: key, example: String(Model.defaults[keyPath: keyPath])) { model, value, at throws(ConfigError) in
            model[keyPath: keyPath] = try at.integer(value, in: range)
        }
    }

    /// The balancing keys (`balance`, `hash_key`, `outlier_detection`, `retries`, `sticky`,
    /// `slow_start_ms`, `max_connections_per_backend`, `queue`) of an upstream object or of the
    /// top level (the default pool), decoded into `path`.
    static func balancing(_ path: WritableKeyPath<Model, BalanceConfig>) -> [Self] {
        [
            ConfigField(key: "balance", example: BalanceConfig.policyExample) { model, value, at throws(ConfigError) in
                model[keyPath: path].policy = try BalanceConfig.decodePolicy(value, at: at)
            },
            ConfigField(key: "hash_key", example: BalanceConfig.hashKeyExample) { model, value, at throws(ConfigError) in
                model[keyPath: path].hashKey = try BalanceConfig.decodeHashKey(value, at: at)
            },
            .section("outlier_detection", path.appending(path: \.outlierDetection)),
            .section("retries", path.appending(path: \.retries)),
            ConfigField(key: "sticky", example: StickyConfig.example) { model, value, at throws(ConfigError) in
                model[keyPath: path].sticky = try StickyConfig.decode(value, at: at)
            },
            .integer("slow_start_ms", path.appending(path: \.slowStartMs), 0...maxMilliseconds),
            .integer("max_connections_per_backend", path.appending(path: \.maxConnectionsPerBackend), 0...1_000_000),
            .section("queue", path.appending(path: \.queue)),
            ConfigField(key: "resolve_interval_ms", example: "30000") { model, value, at throws(ConfigError) in
                let ms = try at.integer(value, in: 0...maxMilliseconds)
                guard ms == 0 || ms >= 100 else { throw at.error("must be 0 (no re-resolution) or at least 100, got \(ms)") }
                model[keyPath: path].resolveIntervalMs = ms
            },
            ConfigField(key: "try_when_all_down", example: "true") { model, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (try one connect when every backend is down) or false") }
                model[keyPath: path].tryWhenAllDown = on
            },
            ConfigField(key: "send_proxy_protocol", example: "\"v2\"") { model, value, at throws(ConfigError) in
                if case .bool(false) = value { model[keyPath: path].sendProxyProtocol = 0; return }
                switch try at.string(value) {
                case "v1": model[keyPath: path].sendProxyProtocol = 1
                case "v2": model[keyPath: path].sendProxyProtocol = 2
                case let other: throw at.error("expected \"v1\" (text) or \"v2\" (binary), got \(JSONValue.quoted(other))")
                }
            },
        ]
    }

    /// A nested object decoded as its own section.
    static func section<S: ConfigSection>(_ key: String, _ keyPath: WritableKeyPath<Model, S>) -> Self {
        ConfigField(key: key, example: S.example) { model, value, at throws(ConfigError) in
            model[keyPath: keyPath] = try S.decode(value, at: at)
        }
    }
}

extension ConfigSection {
    /// The section with its defaults, as JSON text.
    static var example: String {
        "{" + fields.map { "\"\($0.key)\": \($0.example)" }.joined(separator: ", ") + "}"
    }

    /// Starts from the defaults and applies the members in document order, so the first problem
    /// reported is the first one in the file.
    static func decode(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> Self {
        try decode(value, at: location, startingFrom: defaults)
    }

    /// `decode` with other starting values (a named upstream's `health_check` starts from the
    /// top-level one).
    static func decode(_ value: JSONValue, at location: ConfigLocation, startingFrom start: Self) throws(ConfigError) -> Self {
        guard case .object(let members) = value else {
            let place = location.path.isEmpty ? " at the top level" : ""
            throw location.error("expected an object\(place), got \(value.summary)")
        }
        let fields = Self.fields
        var result = start
        for (key, member) in members {
            guard let field = fields.first(where: { $0.key == key }) else {
                throw unknownKey(key, among: fields, in: location)
            }
            try field.apply(&result, member, location.member(key, example: field.example))
        }
        return result
    }

    private static func unknownKey(_ key: String, among fields: [ConfigField<Self>], in location: ConfigLocation) -> ConfigError {
        let names = fields.map(\.key)
        let suggested = Suggestion.closest(to: key, among: names).flatMap { name in fields.first { $0.key == name } }
        let shown = suggested ?? fields[0]
        let problem = if let suggested {
            "unknown key; \(Suggestion.didYouMean(suggested.key))"
        } else {
            "unknown key; expected one of " + names.map { "\"\($0)\"" }.joined(separator: ", ")
        }
        let keyPath = location.member(key, example: shown.example).path
        return ConfigError(file: location.file, field: keyPath, problem: problem,
                           example: "\"\(shown.key)\": \(shown.example)")
    }
}

/// Where a value sits in the file, and typed reads that fail with messages naming that place.
struct ConfigLocation {
    let file: String
    /// `health_check.interval_ms`, `backends[0].url`; "" for the document itself.
    let path: String
    /// A right value for this place (`"interval_ms": 5000`).
    let example: String?

    func error(_ problem: String) -> ConfigError {
        ConfigError(file: file, field: path, problem: problem, example: example)
    }

    /// The location of `key` inside this object; `example` is the JSON text of a right value.
    func member(_ key: String, example: String) -> ConfigLocation {
        ConfigLocation(file: file, path: path.isEmpty ? key : "\(path).\(key)", example: "\"\(key)\": \(example)")
    }

    func element(_ index: Int, example: String) -> ConfigLocation {
        ConfigLocation(file: file, path: "\(path)[\(index)]", example: example)
    }

    func string(_ value: JSONValue) throws(ConfigError) -> String {
        guard case .string(let s) = value else { throw error("expected a string, got \(value.summary)") }
        return s
    }

    /// A whole number in `range`. Fractions are refused rather than rounded, and numbers written as
    /// strings get a hint, because `"5000"` is the most common way to get this wrong.
    func integer(_ value: JSONValue, in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard case .number(let literal) = value else {
            var problem = "expected a whole number, got \(value.summary)"
            if case .string(let s) = value, Int(s) != nil { problem += "; remove the quotes" }
            throw error(problem)
        }
        guard value.isIntegerLiteral else { throw error("expected a whole number, got \(literal)") }
        guard let number = value.integerValue else {
            // A whole number too large for Int: out of range whichever way.
            throw error(literal.hasPrefix("-") ? "must be at least \(range.lowerBound), got \(literal)"
                                               : "must be at most \(range.upperBound), got \(literal)")
        }
        if number < range.lowerBound { throw error("must be at least \(range.lowerBound), got \(number)") }
        if number > range.upperBound { throw error("must be at most \(range.upperBound), got \(number)") }
        return number
    }
}

extension JSONValue {
    /// `a string ("5000")`, `a number (2.5)`, `an array`: what was found, for "expected …, got …".
    fileprivate var summary: String {
        switch self {
        case .string(let s):
            let shown = s.count > 60 ? String(s.prefix(57)) + "..." : s
            return "a string (\(JSONValue.quoted(shown)))"
        case .number, .bool: return "\(kindDescription) (\(self))"
        case .null, .array, .object: return kindDescription
        }
    }
}

// MARK: Sections

extension ProxyConfig: ConfigSection {
    static var defaults: ProxyConfig { ProxyConfig() }

    static var fields: [ConfigField<ProxyConfig>] {
        [
            ConfigField(key: "listen", example: JSONValue.quoted(defaults.listen.description)) {
                config, value, at throws(ConfigError) in
                config.listeners = try ListenerEntry.decodeList(value, at: at)
            },
            ConfigField(key: "backends", example: BackendEntry.listExample) { config, value, at throws(ConfigError) in
                config.backends = try BackendEntry.decodeList(value, at: at)
            },
            .section("health_check", \.healthCheck),
        ] + ConfigField<ProxyConfig>.balancing(\.balance) + [
            .section("timeouts", \.timeouts),
            .section("limits", \.limits),
            .section("pool", \.pool),
            .section("http2", \.http2),
            ConfigField(key: "upstreams", example: UpstreamEntry.mapExample) { config, value, at throws(ConfigError) in
                config.upstreams = try UpstreamEntry.decodeMap(value, at: at)
            },
            ConfigField(key: "routes", example: RouteEntry.listExample) { config, value, at throws(ConfigError) in
                config.routes = try RouteEntry.decodeList(value, at: at)
            },
            .section("path_normalization", \.pathNormalization),
            .integer("workers", \.workers, 0...1024),
            .integer("shutdown_grace_ms", \.shutdownGraceMs, 0...maxMilliseconds),
            ConfigField(key: "access_log", example: AccessLogConfig.example) { config, value, at throws(ConfigError) in
                config.accessLog = try AccessLogConfig.decodeOrOff(value, at: at)
            },
            .section("admin", \.admin),
            .integer("tls_ticket_key_rotation_s", \.tlsTicketKeyRotationS, 0...604_800),
            ConfigField(key: "backend_tls", example: BackendTLSConfig.example) { config, value, at throws(ConfigError) in
                config.backendTLS = try BackendTLSConfig.decode(value, at: at)
            },
            .section("policy", \.policy),
            ConfigField(key: "trusted_proxies", example: "[\"10.0.0.0/8\"]") { config, value, at throws(ConfigError) in
                config.trustedProxies = try at.addressRanges(value)
            },
            ConfigField(key: "resolver", example: "{\"servers\": [\"127.0.0.1:53\"], \"timeout_ms\": 2000, \"attempts\": 2}") {
                config, value, at throws(ConfigError) in
                if case .null = value { config.resolver = nil; return }
                let resolver = try ResolverConfig.decode(value, at: at)
                if resolver.servers.isEmpty {
                    throw at.member("servers", example: "[\"127.0.0.1:53\"]").error("missing; list the DNS servers to ask (or leave \"resolver\" out to use the system resolver)")
                }
                config.resolver = resolver
            },
            ConfigField(key: "redis", example: RedisConfig.example) { config, value, at throws(ConfigError) in
                if case .null = value { config.redis = nil; return }
                config.redis = try RedisConfig.decode(value, at: at)
            },
            ConfigField(key: "compress", example: CompressionConfig.example) { config, value, at throws(ConfigError) in
                config.compress = try CompressionConfig.decodeOrOff(value, at: at)
            },
            ConfigField(key: "inspect", example: InspectConfig.example) { config, value, at throws(ConfigError) in
                if case .bool(let on) = value {
                    config.inspect = InspectConfig()
                    config.inspect.enabled = on
                    return
                }
                config.inspect = try InspectConfig.decode(value, at: at)
            },
        ]
    }
}

extension InspectConfig: ConfigSection {
    static var defaults: InspectConfig { InspectConfig() }
    static var example: String { "{\"enabled\": true, \"max_requests\": 500, \"max_body_bytes\": 65536}" }

    static var fields: [ConfigField<InspectConfig>] {
        [
            ConfigField(key: "enabled", example: "true") { config, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (record requests for /_inspect) or false") }
                config.enabled = on
            },
            .integer("max_requests", \.maxRequests, 1...10_000),
            .integer("max_body_bytes", \.maxBodyBytes, 0...(16 << 20)),
            ConfigField(key: "reveal_secrets", example: "false") { config, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (show Authorization and Cookie values) or false (masked)") }
                config.revealSecrets = on
            },
            .integer("max_memory_bytes", \.maxMemoryBytes, (1 << 20)...(4 << 30)),
        ]
    }
}

extension CompressionConfig: ConfigSection {
    static var defaults: CompressionConfig { CompressionConfig() }
    static var example: String {
        "{\"types\": [\"text/*\", \"application/json\"], \"min_bytes\": 1024, \"gzip_level\": 5, \"brotli_level\": 4}"
    }

    static var fields: [ConfigField<CompressionConfig>] {
        [
            ConfigField(key: "types", example: "[\"text/*\", \"application/json\"]") { config, value, at throws(ConfigError) in
                guard case .array(let items) = value else { throw at.error("expected a list of media types such as [\"text/*\", \"application/json\"]") }
                var types: [String] = []
                for (i, item) in items.enumerated() {
                    let place = at.element(i, example: "\"text/*\"")
                    let written = try place.string(item)
                    let text = written.lowercased()
                    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
                    let isToken: (Substring) -> Bool = { part in
                        !part.isEmpty && part.utf8.allSatisfy { c in (0x21...0x7E).contains(c) && !"()<>@,;:\\\"/[]?={}".utf8.contains(c) }
                    }
                    guard parts.count == 2, isToken(parts[0]), parts[0] != "*", isToken(parts[1]) || parts[1] == "*" else {
                        throw place.error("expected a media type as \"type/subtype\" or \"type/*\" (no parameters), got \(JSONValue.quoted(written))")
                    }
                    types.append(text)
                }
                guard !types.isEmpty else { throw at.error("list at least one media type (or turn compression off with \"compress\": false)") }
                config.types = types
            },
            .integer("min_bytes", \.minBytes, 0...(1 << 30)),
            .integer("gzip_level", \.gzipLevel, 1...9),
            // Higher brotli levels take tens of MiB per stream and are far too slow for the loop:
            // they are for files compressed ahead (a static route's `.br` siblings).
            .integer("brotli_level", \.brotliLevel, 0...6),
            .integer("brotli_window_bits", \.brotliWindowBits, 10...22),
            ConfigField(key: "encodings", example: "[\"br\", \"gzip\"]") { config, value, at throws(ConfigError) in
                guard case .array(let items) = value, !items.isEmpty else { throw at.error("expected a non-empty list such as [\"br\", \"gzip\"], most preferred first") }
                var names: [String] = []
                for (i, item) in items.enumerated() {
                    let place = at.element(i, example: "\"gzip\"")
                    let name = try place.string(item)
                    guard name == "br" || name == "gzip" else {
                        var problem = "unknown encoding \(JSONValue.quoted(name)); expected \"br\" or \"gzip\""
                        if let match = Suggestion.closest(to: name, among: ["br", "gzip"]) { problem += "; \(Suggestion.didYouMean(match))" }
                        throw place.error(problem)
                    }
                    guard !names.contains(name) else { throw place.error("\(JSONValue.quoted(name)) is listed twice") }
                    names.append(name)
                }
                config.encodings = names
            },
            .integer("max_streams", \.maxStreams, 1...1_000_000),
        ]
    }

    /// `true` (the defaults), `false` or null (none), or an object.
    static func decodeOrOff(_ value: JSONValue, at: ConfigLocation) throws(ConfigError) -> CompressionConfig? {
        switch value {
        case .bool(let on): return on ? CompressionConfig() : nil
        case .null: return nil
        case .object: return try decode(value, at: at)
        default: throw at.error("expected true (the defaults), false (off) or an object like \(example)")
        }
    }
}

extension RedisConfig: ConfigSection {
    static var defaults: RedisConfig { RedisConfig() }
    static var example: String { "{\"url\": \"redis://127.0.0.1:6379/0\", \"timeout_ms\": 50, \"on_error\": \"allow\"}" }

    static var fields: [ConfigField<RedisConfig>] {
        [
            ConfigField(key: "url", example: "\"redis://127.0.0.1:6379/0\"") { redis, value, at throws(ConfigError) in
                let text = try at.string(value)
                switch RedisConfig.parseURL(text) {
                case .success(let parsed):
                    (redis.host, redis.port, redis.username, redis.password, redis.database) = parsed
                case .failure(let problem):
                    // The URL may hold a password: the message shows it without.
                    let shown = text.contains("@") ? "redis://…@" + (text.split(separator: "@").last.map(String.init) ?? "") : text
                    throw at.error("\(problem.message), in \(JSONValue.quoted(shown)); expected \"redis://HOST:PORT/DB\" (\"redis://:PASSWORD@HOST\" with a password)")
                }
            },
            .integer("timeout_ms", \.timeoutMs, 1...60_000),
            .integer("connect_timeout_ms", \.connectTimeoutMs, 1...60_000),
            ConfigField(key: "on_error", example: "\"allow\"") { redis, value, at throws(ConfigError) in
                let text = try at.string(value)
                guard let choice = OnError(rawValue: text) else {
                    throw at.error("expected \"allow\" (let requests through while Redis cannot answer) or \"deny\" (answer 503), got \(JSONValue.quoted(text))")
                }
                redis.onError = choice
            },
            ConfigField(key: "key_prefix", example: "\"proxy:rl:\"") { redis, value, at throws(ConfigError) in
                let text = try at.string(value)
                guard text.utf8.count <= 128, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                    throw at.error("expected up to 128 printable ASCII characters without spaces, got \(JSONValue.quoted(text))")
                }
                redis.keyPrefix = text
            },
        ]
    }
}

extension RedisConfig {
    /// `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`; HOST may be `[IPv6]`.
    static func parseURL(_ text: String) -> Result<(String, UInt16, String?, String?, Int), AddressError> {
        guard text.hasPrefix("redis://") else {
            return .failure(AddressError(message: text.hasPrefix("rediss://") ? "TLS to Redis (rediss://) is not supported" : "the scheme must be redis://"))
        }
        var rest = Substring(text.dropFirst(8))
        var username: String?, password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            // Percent-escapes (`%40` for `@`) as in any URL's user information.
            func decoded(_ part: Substring) -> String? { String(part).removingPercentEncodingBytes() }
            if let colon = credentials.firstIndex(of: ":") {
                username = credentials[..<colon].isEmpty ? nil : decoded(credentials[..<colon])
                password = decoded(credentials[credentials.index(after: colon)...])
            } else {
                password = decoded(credentials)
            }
            if (username == nil && credentials.contains(":") && !credentials.hasPrefix(":")) || password == nil {
                return .failure(AddressError(message: "the user or password has a malformed %-escape"))
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), (0...65535).contains(n) else { return .failure(AddressError(message: "the database must be a number")) }
                database = n
            }
        }
        var host = rest, port: UInt16 = 6379
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = UInt16(after.dropFirst()), p > 0 else { return .failure(AddressError(message: "the port must be a number from 1 to 65535")) }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = UInt16(rest[rest.index(after: colon)...]), p > 0 else { return .failure(AddressError(message: "the port must be a number from 1 to 65535")) }
            port = p
        }
        guard !host.isEmpty, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") }) else {
            return .failure(AddressError(message: "the host is missing"))
        }
        return .success((String(host), port, username, password, database))
    }
}

extension HealthCheckConfig: ConfigSection {
    static var defaults: HealthCheckConfig { HealthCheckConfig() }

    static var fields: [ConfigField<HealthCheckConfig>] {
        [
            ConfigField(key: "path", example: JSONValue.quoted(defaults.path ?? "/health")) {
                health, value, at throws(ConfigError) in
                if case .null = value {
                    health.path = nil  // connect-only probes
                    return
                }
                let path = try at.string(value)
                guard path.hasPrefix("/") else {
                    throw at.error("must start with \"/\", got \(JSONValue.quoted(path))")
                }
                // It is sent verbatim as a request target, so nothing that could break the request line.
                guard path.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                    throw at.error("must not contain spaces, control or non-ASCII characters "
                        + "(percent-encode them), got \(JSONValue.quoted(path))")
                }
                health.path = path
            },
            .integer("interval_ms", \.intervalMs, 10...maxMilliseconds),
            .integer("timeout_ms", \.timeoutMs, 1...maxMilliseconds),
            .integer("healthy_threshold", \.healthyThreshold, 1...1000),
            .integer("unhealthy_threshold", \.unhealthyThreshold, 1...1000),
        ]
    }
}

extension TimeoutsConfig: ConfigSection {
    static var defaults: TimeoutsConfig { TimeoutsConfig() }

    static var fields: [ConfigField<TimeoutsConfig>] {
        [
            .integer("connect_ms", \.connectMs, 1...maxMilliseconds),
            .integer("upstream_ms", \.upstreamMs, 1...maxMilliseconds),
            .integer("client_header_ms", \.clientHeaderMs, 1...maxMilliseconds),
            .integer("idle_ms", \.idleMs, 1...maxMilliseconds),
            .integer("client_body_ms", \.clientBodyMs, 1...maxMilliseconds),
            .integer("tunnel_idle_ms", \.tunnelIdleMs, 1...maxMilliseconds),
            .integer("response_idle_ms", \.responseIdleMs, 1...maxMilliseconds),
            .integer("event_stream_idle_ms", \.eventStreamIdleMs, 1...maxMilliseconds),
        ]
    }
}

extension RouteTimeoutsConfig: ConfigSection {
    static var defaults: RouteTimeoutsConfig { RouteTimeoutsConfig() }

    static var fields: [ConfigField<RouteTimeoutsConfig>] {
        func field(_ key: String, _ keyPath: WritableKeyPath<RouteTimeoutsConfig, Int?>, _ example: Int) -> ConfigField<RouteTimeoutsConfig> {
            ConfigField(key: key, example: String(example)) { model, value, at throws(ConfigError) in
                model[keyPath: keyPath] = try at.integer(value, in: 1...maxMilliseconds)
            }
        }
        return [
            field("upstream_ms", \.upstreamMs, 120000),
            field("response_idle_ms", \.responseIdleMs, 60000),
            field("event_stream_idle_ms", \.eventStreamIdleMs, 3_600_000),
        ]
    }
}

extension LimitsConfig: ConfigSection {
    static var defaults: LimitsConfig { LimitsConfig() }

    static var fields: [ConfigField<LimitsConfig>] {
        [
            // Below 1 KiB ordinary browser requests (cookies, user agents) would be refused.
            .integer("max_head_bytes", \.maxHeadBytes, 1024...maxBytes),
            .integer("max_target_bytes", \.maxTargetBytes, 16...maxBytes),
            .integer("max_header_count", \.maxHeaderCount, 1...maxCount),
            .integer("max_body_bytes", \.maxBodyBytes, 0...(1 << 50)),
            ConfigField(key: "max_connections", example: "4096") { limits, value, at throws(ConfigError) in
                // null (or leaving it out): derived from the descriptor limit at start.
                if case .null = value { limits.maxConnections = nil; return }
                limits.maxConnections = try at.integer(value, in: 1...1_000_000)
            },
            .integer("max_upstream_attempts", \.maxUpstreamAttempts, 1...1000),
            .integer("max_interim_responses", \.maxInterimResponses, 0...1000),
            ConfigField(key: "allowed_methods", example: "[\"GET\", \"HEAD\", \"POST\"]") { limits, value, at throws(ConfigError) in
                limits.allowedMethods = try at.methodList(value)
            },
        ]
    }
}

/// A token (RFC 9110 §5.6.2: method names, field names, cookie names): one or more `tchar`, the
/// parser's own byte classes.
func isToken(_ text: String) -> Bool {
    !text.isEmpty && text.utf8.allSatisfy { httpByteClass[Int($0)] & HTTPByteClass.tchar != 0 }
}

extension ConfigLocation {
    /// `["GET", "POST"]`: method names, case-sensitive tokens (RFC 9110 §9.1).
    func methodList(_ value: JSONValue) throws(ConfigError) -> [String] {
        guard case .array(let items) = value else {
            throw error("expected an array of method names, got \(value.kindDescription)")
        }
        var methods: [String] = []
        for (i, item) in items.enumerated() {
            let itemAt = element(i, example: "\"GET\"")
            let name = try itemAt.string(item)
            guard isToken(name) else {
                throw itemAt.error("\(JSONValue.quoted(name)) is not a method name (a token such as \"GET\")")
            }
            // Methods are case-sensitive: "get" would match no client's GET.
            let standard = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
            if name != name.uppercased() && standard.contains(name.uppercased()) {
                throw itemAt.error("methods are case-sensitive: \(JSONValue.quoted(name)) matches no client's \(name.uppercased()); write \(JSONValue.quoted(name.uppercased()))")
            }
            methods.append(name)
        }
        return methods
    }

    /// `["10.0.0.0/8", "::1"]`: address ranges (`AddressRange`).
    func addressRanges(_ value: JSONValue) throws(ConfigError) -> [AddressRange] {
        guard case .array(let items) = value else {
            throw error("expected a list of addresses or CIDR ranges like [\"10.0.0.0/8\", \"127.0.0.1\"], got \(value.kindDescription)")
        }
        var ranges: [AddressRange] = []
        for (i, item) in items.enumerated() {
            let itemAt = element(i, example: "\"10.0.0.0/8\"")
            switch AddressRange.parse(try itemAt.string(item)) {
            case .success(let range): ranges.append(range)
            case .failure(let problem): throw itemAt.error(problem.problem)
            }
        }
        return ranges
    }
}

extension RateLimitConfig: ConfigSection {
    static var defaults: RateLimitConfig { RateLimitConfig() }
    static var example: String { "{\"key\": \"client_ip\", \"rate\": 100, \"per\": \"1s\", \"burst\": 50, \"scope\": \"worker\"}" }

    static var fields: [ConfigField<RateLimitConfig>] {
        [
            ConfigField(key: "key", example: "\"client_ip\"") { limit, value, at throws(ConfigError) in
                let text = try at.string(value)
                if text == "client_ip" { limit.key = .clientIP; return }
                if text == "route" { limit.key = .route; return }
                if text.hasPrefix("header:") {
                    let name = String(text.dropFirst(7)).lowercased()
                    guard isToken(name) else {
                        throw at.error("expected a header name after \"header:\", got \(JSONValue.quoted(text))")
                    }
                    limit.key = .header(name)
                    return
                }
                if text.hasPrefix("jwt:") && text.count > 4 {
                    limit.key = .claim(String(text.dropFirst(4)))
                    return
                }
                throw at.error("expected \"client_ip\", \"header:NAME\", \"jwt:CLAIM\" or \"route\", got \(JSONValue.quoted(text))")
            },
            ConfigField(key: "rate", example: "100") { limit, value, at throws(ConfigError) in
                limit.rate = try at.integer(value, in: 1...1_000_000_000)
            },
            ConfigField(key: "per", example: "\"1s\"") { limit, value, at throws(ConfigError) in
                let text = try at.string(value)
                let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
                guard let unit = units.first(where: { text.hasSuffix($0.0) && Int(text.dropLast($0.0.count)) != nil }),
                      let n = Int(text.dropLast(unit.0.count)), n > 0, n <= 86_400_000 / unit.1 else {
                    throw at.error("expected a duration like \"1s\", \"10s\", \"1m\" or \"1h\", got \(JSONValue.quoted(text))")
                }
                limit.perMs = n * unit.1
            },
            .integer("burst", \.burst, 0...1_000_000_000),
            ConfigField(key: "scope", example: "\"worker\"") { limit, value, at throws(ConfigError) in
                let text = try at.string(value)
                guard let scope = Scope(rawValue: text) else {
                    throw at.error("expected \"worker\" (each worker loop counts alone), \"proxy\" (all loops of this process) or \"global\" (every proxy sharing the top-level \"redis\"), got \(JSONValue.quoted(text))")
                }
                limit.scope = scope
            },
            .integer("max_keys", \.maxKeys, 16...16_777_216),
            .integer("lease", \.lease, 1...100_000),
        ]
    }

    /// `rate` is required.
    static func decode(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> RateLimitConfig {
        let limit: RateLimitConfig = try decode(value, at: location, startingFrom: RateLimitConfig())
        if limit.rate == 0 { throw location.member("rate", example: "100").error("missing; how many requests per \"per\"") }
        // One request at least every microsecond of `per` (a million a second), and the burst's
        // span (interval × (burst + 1)) within a day: the arithmetic stays exact and bounded.
        let intervalNs = Double(limit.perMs) * 1e6 / Double(limit.rate)
        if intervalNs < 1000 {
            throw location.member("rate", example: "100").error("at most 1,000,000 requests a second (\(limit.rate) per \(limit.perMs) ms is more)")
        }
        if intervalNs * Double(limit.burst + 1) > 86_400e9 {
            throw location.member("burst", example: "50").error("the burst would span more than a day at this rate; lower it")
        }
        return limit
    }
}

extension AuthConfig: ConfigSection {
    static var defaults: AuthConfig { AuthConfig() }
    static var example: String { "{\"basic\": {\"htpasswd\": \"users.htpasswd\", \"realm\": \"admin\"}}" }

    static var fields: [ConfigField<AuthConfig>] {
        [
            ConfigField(key: "basic", example: "{\"htpasswd\": \"users.htpasswd\", \"realm\": \"admin\"}") { auth, value, at throws(ConfigError) in
                let basic = try AuthConfig.Basic.decode(value, at: at)
                let place = at.member("htpasswd", example: "\"users.htpasswd\"")
                guard !basic.htpasswd.isEmpty else { throw place.error("missing; the htpasswd file (make one with `htpasswd -B -c FILE USER`)") }
                var loaded = basic
                loaded.htpasswd = CertificateEntry.resolve(basic.htpasswd, against: at.file)
                switch AuthConfig.Basic.load(loaded.htpasswd) {
                case .success(let users): loaded.users = users
                case .failure(let problem): throw place.error(problem.message)
                }
                auth.basic = loaded
            },
            ConfigField(key: "jwt", example: AuthConfig.JWT.example) { auth, value, at throws(ConfigError) in
                auth.jwt = try AuthConfig.JWT.decode(value, at: at)
                if auth.jwt!.keys.isEmpty && auth.jwt!.remote == nil && auth.jwt!.secret == nil {
                    throw at.member("jwks", example: "\"keys/jwks.json\"").error("missing; a JWKS file or https:// URL (or \"secret_file\" for HS256)")
                }
                // Keys fetched from a URL are not known yet: every public-key algorithm may be used.
                let fetched = auth.jwt!.remote != nil ? AuthConfig.JWT.publicKeyAlgorithms : []
                let usable = Set(auth.jwt!.keys.flatMap(AuthConfig.JWT.algorithms(for:)) + fetched + (auth.jwt!.secret != nil ? ["HS256"] : []))
                if auth.jwt!.algorithms.isEmpty {
                    auth.jwt!.algorithms = usable.sorted()
                } else if let unusable = auth.jwt!.algorithms.first(where: { !usable.contains($0) }) {
                    throw at.member("algorithms", example: "[\"ES256\"]").error("no key can check \(JSONValue.quoted(unusable)) (the keys allow \(usable.sorted().joined(separator: ", ")))")
                }
            },
            ConfigField(key: "forward_credentials", example: "false") { auth, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (the backend gets the client's Authorization field) or false") }
                auth.forwardCredentials = on
            },
        ]
    }
}

extension AuthConfig.JWT: ConfigSection {
    static var defaults: AuthConfig.JWT { AuthConfig.JWT() }
    static var example: String { "{\"jwks\": \"keys/jwks.json\", \"issuer\": \"https://id.example\", \"audience\": \"api\", \"forward_claims\": {\"sub\": \"X-User-Id\"}}" }

    static var fields: [ConfigField<AuthConfig.JWT>] {
        [
            ConfigField(key: "jwks", example: "\"keys/jwks.json\"") { jwt, value, at throws(ConfigError) in
                if case .object = value {
                    jwt.remote = try AuthConfig.JWKSSource.decode(value, at: at)
                    return
                }
                let text = try at.string(value)
                if text.contains("://") {
                    var source = AuthConfig.JWKSSource()
                    source.url = text
                    try source.splitURL(at: at)
                    jwt.remote = source
                    return
                }
                switch AuthConfig.JWT.loadJWKS(CertificateEntry.resolve(text, against: at.file)) {
                case .success(let keys): jwt.keys = keys
                case .failure(let problem): throw at.error(problem.message)
                }
            },
            ConfigField(key: "secret_file", example: "\"keys/hs256.key\"") { jwt, value, at throws(ConfigError) in
                let path = CertificateEntry.resolve(try at.string(value), against: at.file)
                switch AuthConfig.readSmallFile(path) {
                case .success(var secret):
                    if secret.last == 0x0A { secret.removeLast() }
                    if secret.last == 0x0D { secret.removeLast() }
                    guard secret.count >= 32, secret.count <= 4096 else { throw at.error("\(path) holds \(secret.count) bytes; an HS256 secret needs 32 to 4096") }
                    jwt.secret = secret
                case .failure(let problem): throw at.error(problem.message)
                }
            },
            ConfigField(key: "algorithms", example: "[\"ES256\"]") { jwt, value, at throws(ConfigError) in
                guard case .array(let items) = value, !items.isEmpty else { throw at.error("expected a list like [\"ES256\", \"RS256\"]") }
                jwt.algorithms = try items.enumerated().map { i, item throws(ConfigError) in
                    let name = try at.element(i, example: "\"ES256\"").string(item)
                    guard ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"].contains(name) else {
                        throw at.element(i, example: "\"ES256\"").error("unknown or refused algorithm \(JSONValue.quoted(name)) (\"none\" is never accepted)")
                    }
                    return name
                }
            },
            ConfigField(key: "issuer", example: "\"https://id.example\"") { jwt, value, at throws(ConfigError) in
                jwt.issuer = try at.string(value)
            },
            ConfigField(key: "audience", example: "\"api\"") { jwt, value, at throws(ConfigError) in
                if case .array(let items) = value {
                    guard !items.isEmpty else { throw at.error("an empty list would check nothing; name the audience, or leave \"audience\" out") }
                    jwt.audiences = try items.enumerated().map { i, item throws(ConfigError) in try at.element(i, example: "\"api\"").string(item) }
                } else {
                    jwt.audiences = [try at.string(value)]
                }
            },
            .integer("leeway_s", \.leewayS, 0...600),
            .integer("max_token_bytes", \.maxTokenBytes, 256...65536),
            ConfigField(key: "forward_claims", example: "{\"sub\": \"X-User-Id\"}") { jwt, value, at throws(ConfigError) in
                guard case .object(let members) = value else { throw at.error("expected an object like {\"sub\": \"X-User-Id\"}") }
                jwt.forwardClaims = try members.map { claim, header throws(ConfigError) in
                    let name = try at.member(claim, example: "\"X-User-Id\"").string(header)
                    guard isToken(name), HeaderRulesConfig.reserved(.request)[name.lowercased()] == nil, name.lowercased() != "authorization" else {
                        throw at.member(claim, example: "\"X-User-Id\"").error("\(JSONValue.quoted(name)) cannot carry a claim (not a field name, or one the proxy sets itself)")
                    }
                    return AuthConfig.ForwardedClaim(claim: claim, header: name)
                }
            },
        ]
    }
}

extension StaticFilesConfig: ConfigSection {
    static var defaults: StaticFilesConfig { StaticFilesConfig() }
    static var example: String { "{\"root\": \"dist\", \"index\": \"index.html\", \"spa_fallback\": true}" }

    static var fields: [ConfigField<StaticFilesConfig>] {
        [
            ConfigField(key: "root", example: "\"dist\"") { files, value, at throws(ConfigError) in
                files.root = try at.string(value)
            },
            ConfigField(key: "index", example: "\"index.html\"") { files, value, at throws(ConfigError) in
                if case .null = value { files.index = nil; return }
                let name = try at.string(value)
                guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else { throw at.error("expected a file name such as \"index.html\" (or null for none)") }
                files.index = name
            },
            ConfigField(key: "spa_fallback", example: "true") { files, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (unknown paths get the index, for single-page apps) or false") }
                files.spaFallback = on
            },
            ConfigField(key: "precompressed", example: "true") { files, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (send FILE.br / FILE.gz when the client takes them) or false") }
                files.precompressed = on
            },
            ConfigField(key: "cache_control", example: "\"public, max-age=3600\"") { files, value, at throws(ConfigError) in
                if case .null = value { files.cacheControl = nil; return }
                let text = try at.string(value)
                guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { throw at.error("expected a Cache-Control value such as \"public, max-age=3600\"") }
                files.cacheControl = text
            },
            .integer("read_chunk_bytes", \.readChunkBytes, 4096...(4 << 20)),
        ]
    }
}

extension AuthConfig.JWKSSource: ConfigSection {
    static var defaults: AuthConfig.JWKSSource { AuthConfig.JWKSSource() }
    static var example: String { "{\"url\": \"https://id.example/.well-known/jwks.json\", \"refresh_s\": 300}" }

    static var fields: [ConfigField<AuthConfig.JWKSSource>] {
        [
            ConfigField(key: "url", example: "\"https://id.example/.well-known/jwks.json\"") { source, value, at throws(ConfigError) in
                source.url = try at.string(value)
                try source.splitURL(at: at)
            },
            .integer("refresh_s", \.refreshS, 1...86400),
            .integer("min_refetch_s", \.minRefetchS, 1...3600),
            .integer("timeout_ms", \.timeoutMs, 100...60000),
            .integer("max_bytes", \.maxBytes, 1024...(16 << 20)),
            .integer("max_keys", \.maxKeys, 1...1024),
            ConfigField(key: "ca", example: "\"certs/idp-ca.pem\"") { source, value, at throws(ConfigError) in
                let path = CertificateEntry.resolve(try at.string(value), against: at.file)
                guard access(path, R_OK) == 0 else { throw at.error("cannot read \(path): \(String(cString: strerror(errno)))") }
                // Read now too, so a file that holds no certificate fails the load, not every fetch.
                do { _ = try TLSContext(clientCAFile: path) } catch let e as TLSSetupError { throw at.error("\(path): \(e.message)") } catch {
                    throw at.error("\(path): \(error)")
                }
                source.ca = path
            },
        ]
    }

    static func decode(_ value: JSONValue, at: ConfigLocation) throws(ConfigError) -> AuthConfig.JWKSSource {
        let source: AuthConfig.JWKSSource = try decode(value, at: at, startingFrom: AuthConfig.JWKSSource())
        guard !source.url.isEmpty else { throw at.member("url", example: "\"https://id.example/.well-known/jwks.json\"").error("missing; where the JWKS is fetched from") }
        return source
    }

    /// Splits `url` into host, port and target. `https://` anywhere; `http://` only to a loopback
    /// host, since keys fetched in clear text from elsewhere could be swapped on the way.
    mutating func splitURL(at: ConfigLocation) throws(ConfigError) {
        let text = url
        guard let schemeEnd = text.firstRange(of: "://") else { throw at.error("expected a URL like \"https://id.example/.well-known/jwks.json\"") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "https" || scheme == "http" else {
            throw at.error("unsupported scheme \(JSONValue.quoted(scheme)); the JWKS is fetched over https://")
        }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = rest[authorityEnd...]
        if let hash = path.firstIndex(of: "#") { path = path[..<hash] }
        if authority.contains("@") { throw at.error("credentials in the JWKS URL (\"user@\") are not supported") }
        guard path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw at.error("the URL's path has spaces or bytes outside ASCII; %-encode them") }
        let parsed: (host: String, port: UInt16?)
        do { parsed = try AddressSyntax.hostAndPort(authority, allowZeroPort: false) } catch { throw at.error(error.problem) }
        tls = scheme == "https"
        host = parsed.host
        port = parsed.port ?? (tls ? 443 : 80)
        target = path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
        // Loopback: the name localhost, an IPv4 literal in 127/8, ::1, or ::ffff:127.x.y.z — never a
        // name that merely starts with "127." (DNS could put it anywhere).
        let literal = SocketAddress(ip: host, port: 0).map(\.addressBytes)
        let loopback = host.lowercased() == "localhost" || literal.map { b in
            b.count == 4 ? b[0] == 127
                : b == [UInt8](repeating: 0, count: 15) + [1] || (b.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] && b[12] == 127)
        } == true
        if !tls && !loopback {
            throw at.error("keys fetched over http:// could be replaced on the way; use https:// (http:// is accepted only for a loopback host)")
        }
    }
}

extension AuthConfig.Basic: ConfigSection {
    static var defaults: AuthConfig.Basic { AuthConfig.Basic() }
    static var example: String { "{\"htpasswd\": \"users.htpasswd\", \"realm\": \"admin\"}" }

    static var fields: [ConfigField<AuthConfig.Basic>] {
        [
            ConfigField(key: "htpasswd", example: "\"users.htpasswd\"") { basic, value, at throws(ConfigError) in
                basic.htpasswd = try at.string(value)
            },
            ConfigField(key: "realm", example: "\"admin\"") { basic, value, at throws(ConfigError) in
                let text = try at.string(value)
                guard !text.isEmpty, text.utf8.count <= 128, text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) else {
                    throw at.error("expected up to 128 printable ASCII characters without quotes or backslashes, got \(JSONValue.quoted(text))")
                }
                basic.realm = text
            },
        ]
    }
}

extension CORSConfig: ConfigSection {
    static var defaults: CORSConfig { CORSConfig() }
    static var example: String {
        "{\"origins\": [\"https://app.example\"], \"methods\": [\"GET\", \"POST\"], \"headers\": [\"Authorization\"], \"credentials\": true, \"max_age_s\": 600}"
    }

    static var fields: [ConfigField<CORSConfig>] {
        func names(_ value: JSONValue, _ at: ConfigLocation) throws(ConfigError) -> [String] {
            guard case .array(let items) = value else { throw at.error("expected a list of names") }
            return try items.enumerated().map { i, item throws(ConfigError) in
                let place = at.element(i, example: "\"Authorization\"")
                let name = try place.string(item)
                guard name == "*" || isToken(name) else {
                    throw place.error("\(JSONValue.quoted(name)) is not a field or method name")
                }
                return name
            }
        }
        return [
            ConfigField(key: "origins", example: "[\"https://app.example\"]") { cors, value, at throws(ConfigError) in
                guard case .array(let items) = value, !items.isEmpty else { throw at.error("expected a list of origins like [\"https://app.example\"] (or [\"*\"])") }
                cors.origins = try items.enumerated().map { i, item throws(ConfigError) in
                    let place = at.element(i, example: "\"https://app.example\"")
                    let origin = try place.string(item)
                    // An origin is scheme://host[:port], lowercase, nothing after (RFC 6454 serialisation).
                    let valid = origin == "*" || ((origin.hasPrefix("https://") || origin.hasPrefix("http://"))
                        && origin == origin.lowercased() && !origin.hasSuffix("/")
                        && origin.split(separator: "/", omittingEmptySubsequences: false).count == 3)
                    guard valid else {
                        throw place.error("expected an origin as browsers send it (\"https://app.example\", \"http://localhost:5173\": lowercase, no path, no trailing slash), got \(JSONValue.quoted(origin))")
                    }
                    return origin
                }
            },
            ConfigField(key: "methods", example: "[\"GET\", \"POST\"]") { cors, value, at throws(ConfigError) in
                let listed = try names(value, at)
                cors.methods = listed == ["*"] ? listed : try at.methodList(value)
            },
            ConfigField(key: "headers", example: "[\"Authorization\"]") { cors, value, at throws(ConfigError) in cors.headers = try names(value, at) },
            ConfigField(key: "expose_headers", example: "[\"X-Total\"]") { cors, value, at throws(ConfigError) in cors.exposeHeaders = try names(value, at) },
            ConfigField(key: "credentials", example: "true") { cors, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true or false") }
                cors.credentials = on
            },
            ConfigField(key: "max_age_s", example: "600") { cors, value, at throws(ConfigError) in cors.maxAgeS = try at.integer(value, in: 0...86_400) },
        ]
    }

    /// `origins` is required, and `*` cannot go with credentials (the Fetch standard refuses it;
    /// echoing any origin with credentials would hand every site the user's session).
    static func decode(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> CORSConfig {
        let cors: CORSConfig = try decode(value, at: location, startingFrom: CORSConfig())
        if cors.origins.isEmpty {
            throw location.member("origins", example: "[\"https://app.example\"]").error("missing; list the origins whose pages may call this route")
        }
        if cors.credentials {
            for (key, list) in [("origins", cors.origins), ("methods", cors.methods), ("headers", cors.headers), ("expose_headers", cors.exposeHeaders)]
                where list.contains("*") {
                throw location.member(key, example: "[\"https://app.example\"]")
                    .error("\"*\" cannot be used with \"credentials\": true (browsers refuse it); list the allowed values")
            }
        }
        if cors.origins.contains("*") && cors.origins.count > 1 {
            throw location.member("origins", example: "[\"*\"]").error("\"*\" stands alone (any origin); remove the others or the \"*\"")
        }
        return cors
    }
}

extension HeaderRulesConfig {
    static let example = "{\"set\": {\"X-Env\": \"prod\"}, \"remove\": [\"X-Debug\"]}"

    enum Direction { case request, response }

    /// Fields the rules may not name: framing and hop-by-hop ones (the proxy frames each hop
    /// itself), and those the proxy states on that side (it would send two).
    static func reserved(_ direction: Direction) -> [String: String] {
        var names = ["content-length": "the proxy frames each hop itself", "transfer-encoding": "the proxy frames each hop itself",
                     "connection": "hop-by-hop", "keep-alive": "hop-by-hop", "upgrade": "hop-by-hop", "te": "hop-by-hop",
                     "trailer": "hop-by-hop", "proxy-connection": "hop-by-hop", "x-request-id": "the proxy sets it (see the request id)"]
        if direction == .response {
            names["strict-transport-security"] = "use the listener's \"hsts\" (or \"security_headers\")"
        }
        if direction == .request {
            for n in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "x-real-ip", "forwarded", "via"] {
                names[n] = "the proxy sets it from what it knows of the client"
            }
            names["host"] = "use the route's \"host_header\""
        }
        return names
    }

    static func decode(_ value: JSONValue, at: ConfigLocation, direction: Direction) throws(ConfigError) -> HeaderRulesConfig {
        guard case .object(let members) = value else { throw at.error("expected an object like \(example)") }
        var rules = HeaderRulesConfig()
        let reserved = reserved(direction)
        func checkName(_ name: String, _ place: ConfigLocation) throws(ConfigError) {
            // RFC 9110 §5.1: a field name is a token.
            guard isToken(name) else {
                throw place.error("\(JSONValue.quoted(name)) is not a header field name")
            }
            if let why = reserved[name.lowercased()] { throw place.error("\(name) cannot be changed here: \(why)") }
        }
        for (key, member) in members {
            let place = at.member(key, example: key == "set" ? "{\"X-Env\": \"prod\"}" : "[\"X-Debug\"]")
            switch key {
            case "set":
                guard case .object(let fields) = member else { throw place.error("expected an object of field names and values") }
                for (name, v) in fields {
                    let fieldPlace = place.member(name, example: "\"value\"")
                    try checkName(name, fieldPlace)
                    let text = try fieldPlace.string(v)
                    guard text.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                        throw fieldPlace.error("a field value cannot contain control characters")
                    }
                    // RFC 9110 §5.5: no whitespace at either end (HTTP/2 peers reset such a stream).
                    guard text.first.map({ $0 != " " && $0 != "\t" }) ?? true, text.last.map({ $0 != " " && $0 != "\t" }) ?? true else {
                        throw fieldPlace.error("a field value cannot start or end with a space or tab, got \(JSONValue.quoted(text))")
                    }
                    var rest = Substring(text)
                    while let open = rest.firstIndex(of: "{") {
                        guard let close = rest[open...].firstIndex(of: "}") else { break }
                        let word = String(rest[rest.index(after: open)..<close])
                        guard placeholders.contains(word) else {
                            throw fieldPlace.error("unknown placeholder {\(word)}; use " + placeholders.map { "{\($0)}" }.joined(separator: ", "))
                        }
                        rest = rest[rest.index(after: close)...]
                    }
                    rules.assignments.append(Setting(name: name, value: text))
                }
            case "remove":
                guard case .array(let items) = member else { throw place.error("expected a list of field names") }
                for (i, item) in items.enumerated() {
                    let itemPlace = place.element(i, example: "\"X-Debug\"")
                    let name = try itemPlace.string(item)
                    try checkName(name, itemPlace)
                    rules.remove.append(name)
                }
            default:
                throw place.error("unknown key; expected \"set\" or \"remove\"")
            }
        }
        return rules
    }
}

extension PolicyConfig: ConfigSection {
    static var defaults: PolicyConfig { PolicyConfig() }
    static var example: String { "{\"allow\": [\"10.0.0.0/8\"], \"deny\": [], \"allowed_methods\": [\"GET\", \"POST\"], \"max_body_bytes\": 1048576}" }

    /// The policy keys, decoded into `path` (the top-level `policy` object, or a route).
    static func fields<Model>(at path: WritableKeyPath<Model, PolicyConfig>) -> [ConfigField<Model>] {
        [
            ConfigField(key: "allow", example: "[\"10.0.0.0/8\", \"127.0.0.1\"]") { model, value, at throws(ConfigError) in
                model[keyPath: path].allow = try at.addressRanges(value)
            },
            ConfigField(key: "deny", example: "[\"192.0.2.0/24\"]") { model, value, at throws(ConfigError) in
                model[keyPath: path].deny = try at.addressRanges(value)
            },
            ConfigField(key: "allowed_methods", example: "[\"GET\", \"POST\"]") { model, value, at throws(ConfigError) in
                model[keyPath: path].allowedMethods = try at.methodList(value)
            },
            ConfigField(key: "max_body_bytes", example: "1048576") { model, value, at throws(ConfigError) in
                model[keyPath: path].maxBodyBytes = try at.integer(value, in: 0...(1 << 50))
            },
            ConfigField(key: "request_headers", example: HeaderRulesConfig.example) { model, value, at throws(ConfigError) in
                model[keyPath: path].requestHeaders = try HeaderRulesConfig.decode(value, at: at, direction: .request)
            },
            ConfigField(key: "response_headers", example: HeaderRulesConfig.example) { model, value, at throws(ConfigError) in
                model[keyPath: path].responseHeaders = try HeaderRulesConfig.decode(value, at: at, direction: .response)
            },
            ConfigField(key: "security_headers", example: "true") { model, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true or false") }
                model[keyPath: path].securityHeaders = on
            },
            ConfigField(key: "rate_limit", example: RateLimitConfig.example) { model, value, at throws(ConfigError) in
                // `false`: none here, whatever the top-level policy says.
                if case .bool(false) = value { model[keyPath: path].rateLimit = RateLimitConfig(); return }
                model[keyPath: path].rateLimit = try RateLimitConfig.decode(value, at: at)
            },
            ConfigField(key: "cors", example: CORSConfig.example) { model, value, at throws(ConfigError) in
                // `false`: none here, whatever the top-level policy says.
                if case .bool(false) = value { model[keyPath: path].cors = CORSConfig(); return }
                model[keyPath: path].cors = try CORSConfig.decode(value, at: at)
            },
            ConfigField(key: "auth", example: AuthConfig.example) { model, value, at throws(ConfigError) in
                // `false`: open here, whatever the top-level policy says.
                if case .bool(false) = value { model[keyPath: path].auth = AuthConfig(); return }
                let auth = try AuthConfig.decode(value, at: at)
                if auth.basic == nil && auth.jwt == nil {
                    throw at.error("name a scheme: {\"basic\": {\"htpasswd\": \"users.htpasswd\"}} or {\"jwt\": \(AuthConfig.JWT.example)} (or false for none)")
                }
                if auth.basic != nil && auth.jwt != nil {
                    throw at.error("one scheme per route: \"basic\" or \"jwt\"")
                }
                model[keyPath: path].auth = auth
            },
        ]
    }

    static var fields: [ConfigField<PolicyConfig>] { fields(at: \.self) }
}

extension PathNormalizationConfig: ConfigSection {
    static var defaults: PathNormalizationConfig { PathNormalizationConfig() }

    static var fields: [ConfigField<PathNormalizationConfig>] {
        [
            ConfigField(key: "merge_slashes", example: "true") { normalization, value, at throws(ConfigError) in
                guard case .bool(let merge) = value else { throw at.error("expected true or false, got \(value.summary)") }
                normalization.mergeSlashes = merge
            },
            ConfigField(key: "escaped_slashes", example: "\"keep\"") { normalization, value, at throws(ConfigError) in
                normalization.escapedSlashes = try at.choice(value, EscapedSlashes.self)
            },
            ConfigField(key: "forward", example: "\"original\"") { normalization, value, at throws(ConfigError) in
                normalization.forward = try at.choice(value, Forward.self)
            },
        ]
    }
}

extension ConfigLocation {
    /// One of the string values of `T` (its raw values, in declaration order).
    func choice<T: RawRepresentable & CaseIterable>(_ value: JSONValue, _: T.Type) throws(ConfigError) -> T
    where T.RawValue == String {
        let names = T.allCases.map { JSONValue.quoted($0.rawValue) }.joined(separator: ", ")
        guard case .string(let text) = value else { throw error("expected one of \(names), got \(value.summary)") }
        if let choice = T(rawValue: text) { return choice }
        var problem = "expected one of \(names), got \(JSONValue.quoted(text))"
        if let close = Suggestion.closest(to: text, among: T.allCases.map(\.rawValue)) {
            problem += "; " + Suggestion.didYouMean(close)
        }
        throw error(problem)
    }
}

extension BackendTLSConfig: ConfigSection {
    static var defaults: BackendTLSConfig { BackendTLSConfig() }

    static var fields: [ConfigField<BackendTLSConfig>] {
        func path(_ key: String, _ keyPath: WritableKeyPath<BackendTLSConfig, String?>, _ example: String) -> ConfigField<BackendTLSConfig> {
            ConfigField(key: key, example: JSONValue.quoted(example)) { tls, value, at throws(ConfigError) in
                if case .null = value { tls[keyPath: keyPath] = nil; return }
                let text = try at.string(value)
                guard !text.isEmpty else { throw at.error("must not be empty (leave it out instead)") }
                tls[keyPath: keyPath] = CertificateEntry.resolve(text, against: at.file)
            }
        }
        return [
            path("ca", \.ca, "certs/backend-ca.pem"),
            ConfigField(key: "verify", example: "true") { tls, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true or false") }
                tls.verify = on
            },
            ConfigField(key: "server_name", example: "\"api.internal\"") { tls, value, at throws(ConfigError) in
                let name = try at.string(value)
                guard !name.isEmpty, name.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                    throw at.error("expected a host name, got \(JSONValue.quoted(name))")
                }
                tls.serverName = name
            },
            path("cert", \.cert, "certs/client.pem"),
            path("key", \.key, "certs/client.key"),
        ]
    }

    static func decode(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> BackendTLSConfig {
        let tls = try decode(value, at: location, startingFrom: defaults)
        if (tls.cert == nil) != (tls.key == nil) {
            throw location.member(tls.cert == nil ? "cert" : "key", example: tls.cert == nil ? "\"certs/client.pem\"" : "\"certs/client.key\"")
                .error("a client certificate needs both \"cert\" and \"key\"")
        }
        return tls
    }
}

extension HTTP2Config: ConfigSection {
    static var defaults: HTTP2Config { HTTP2Config() }

    static var fields: [ConfigField<HTTP2Config>] {
        [
            ConfigField(key: "h2c", example: "true") { config, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true or false, got \(value.summary)") }
                config.h2c = on
            },
            .integer("max_concurrent_streams", \.maxConcurrentStreams, 1...10_000),
            // RFC 9113 §6.5.2: windows are at most 2^31 - 1; below 16 KiB a frame cannot be filled.
            .integer("stream_window_bytes", \.streamWindowBytes, 16_384...2_147_483_647),
            .integer("connection_window_bytes", \.connectionWindowBytes, 65_535...2_147_483_647),
            .integer("max_header_list_bytes", \.maxHeaderListBytes, 1024...maxBytes),
            .integer("idle_timeout_ms", \.idleTimeoutMs, 1...maxMilliseconds),
            .integer("reset_burst", \.resetBurst, 1...1_000_000),
            .integer("resets_per_s", \.resetsPerSecond, 1...1_000_000),
            .integer("max_continuation_frames", \.maxContinuationFrames, 1...1000),
            .integer("max_queued_control_frames", \.maxQueuedControlFrames, 1...1_000_000),
            .integer("max_glitches", \.maxGlitches, 1...1_000_000),
            .integer("max_control_frames_per_s", \.maxControlFramesPerS, 1...1_000_000),
        ]
    }
}

extension OutlierDetectionConfig: ConfigSection {
    static var defaults: OutlierDetectionConfig { OutlierDetectionConfig() }

    static var fields: [ConfigField<OutlierDetectionConfig>] {
        [
            .integer("consecutive_failures", \.consecutiveFailures, 0...1_000_000),
            .integer("base_ejection_ms", \.baseEjectionMs, 1...maxMilliseconds),
            .integer("max_ejection_percent", \.maxEjectionPercent, 0...100),
        ]
    }
}

extension RetriesConfig: ConfigSection {
    static var defaults: RetriesConfig { RetriesConfig() }

    static var fields: [ConfigField<RetriesConfig>] {
        [
            .integer("attempts", \.attempts, 0...10),
            ConfigField(key: "on", example: "[\"reset\", \"503\"]") { config, value, at throws(ConfigError) in
                guard case .array(let items) = value else { throw at.error("expected a list like [\"reset\", \"503\"]") }
                var on: Set<RetryCondition> = []
                for (i, item) in items.enumerated() {
                    let text = try at.element(i, example: "\"reset\"").string(item)
                    guard let condition = RetryCondition(rawValue: text) else {
                        let names = RetryCondition.allCases.map(\.rawValue)
                        var problem = "unknown condition \(JSONValue.quoted(text)); expected any of " + names.map { JSONValue.quoted($0) }.joined(separator: ", ")
                        if let match = Suggestion.closest(to: text, among: names) { problem += "; \(Suggestion.didYouMean(match))" }
                        throw at.element(i, example: "\"reset\"").error(problem)
                    }
                    on.insert(condition)
                }
                config.on = on
            },
            .integer("per_try_timeout_ms", \.perTryTimeoutMs, 0...maxMilliseconds),
            .integer("budget_percent", \.budgetPercent, 0...100),
            .integer("min_retries_per_s", \.minRetriesPerS, 0...1_000_000),
        ]
    }
}

extension StickyConfig: ConfigSection {
    static var defaults: StickyConfig { StickyConfig() }

    static var fields: [ConfigField<StickyConfig>] {
        [
            ConfigField(key: "cookie", example: "\"srv\"") { config, value, at throws(ConfigError) in
                let name = try at.string(value)
                // RFC 6265 §4.1.1: a cookie name is a token.
                guard isToken(name) else {
                    throw at.error("a cookie name is letters, digits and !#$%&'*+-.^_`|~, got \(JSONValue.quoted(name))")
                }
                config.cookie = name
            },
            .integer("max_age_s", \.maxAgeS, 0...400 * 24 * 3600),
        ]
    }

    /// `{"cookie": …}` is required.
    static func decode(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> StickyConfig {
        let sticky: StickyConfig = try decode(value, at: location, startingFrom: StickyConfig())
        if sticky.cookie.isEmpty { throw location.member("cookie", example: "\"srv\"").error("missing; name the cookie that keeps a client on its backend") }
        return sticky
    }
}

extension QueueConfig: ConfigSection {
    static var defaults: QueueConfig { QueueConfig() }

    static var fields: [ConfigField<QueueConfig>] {
        [
            .integer("max", \.max, 0...1_000_000),
            .integer("timeout_ms", \.timeoutMs, 1...maxMilliseconds),
        ]
    }
}

extension ResolverConfig: ConfigSection {
    static var defaults: ResolverConfig { ResolverConfig() }

    static var fields: [ConfigField<ResolverConfig>] {
        [
            ConfigField(key: "servers", example: "[\"127.0.0.1:53\"]") { config, value, at throws(ConfigError) in
                guard case .array(let items) = value else {
                    throw at.error("expected a list of DNS server addresses like [\"127.0.0.1:53\"]")
                }
                guard !items.isEmpty else {
                    throw at.error("the list is empty; name at least one DNS server (or leave \"resolver\" out to use the system resolver)")
                }
                config.servers = try items.enumerated().map { i, item throws(ConfigError) in
                    let place = at.element(i, example: "\"127.0.0.1:53\"")
                    let text = try place.string(item)
                    guard ResolverConfig.isServerAddress(text) else {
                        // "[v6]:port" or "v4:port" with a valid address: the port is what is wrong.
                        let host: Substring = text.hasPrefix("[")
                            ? text.dropFirst().prefix { $0 != "]" }
                            : text.prefix { $0 != ":" }
                        let reason = (AddressSyntax.isIPv6(host) || AddressSyntax.isIPv4(host)) && !AddressSyntax.isIPv6(Substring(text))
                            ? "the port must be a number from 1 to 65535"
                            : "the resolver's own address cannot be a host name"
                        throw place.error("expected an IP address with an optional port (\"127.0.0.1\", \"127.0.0.1:5353\", \"[::1]:53\"), "
                            + "got \(JSONValue.quoted(text)); \(reason)")
                    }
                    return text
                }
            },
            .integer("timeout_ms", \.timeoutMs, 1...10_000),
            .integer("attempts", \.attempts, 1...5),
        ]
    }
}

extension ResolverConfig {
    /// An IPv4 or IPv6 literal, with an optional port (IPv6 in brackets when it has one).
    static func isServerAddress(_ text: String) -> Bool {
        func isPort(_ s: Substring) -> Bool { s.allSatisfy { $0.isASCII && $0.isNumber } && Int(s).map { (1...65535).contains($0) } == true }
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let rest = text[text.index(after: close)...]
            return AddressSyntax.isIPv6(text[text.index(after: text.startIndex)..<close])
                && (rest.isEmpty || (rest.hasPrefix(":") && isPort(rest.dropFirst())))
        }
        if AddressSyntax.isIPv6(Substring(text)) { return true }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        return AddressSyntax.isIPv4(parts[0]) && (parts.count == 1 || (parts.count == 2 && isPort(parts[1])))
    }
}

extension PoolConfig: ConfigSection {
    static var defaults: PoolConfig { PoolConfig() }

    static var fields: [ConfigField<PoolConfig>] {
        [
            .integer("idle_timeout_ms", \.idleTimeoutMs, 1...maxMilliseconds),
            .integer("max_idle_per_backend", \.maxIdlePerBackend, 0...maxCount),
        ]
    }
}

/// One element of `backends` as written: `id` is optional (it defaults from the position) and
/// `url` is required, which the model's non-optional fields cannot express, so entries are read
/// into this first and checked as a list.
struct BackendEntry: ConfigSection {
    var id: String?
    var url: String?
    var address: (host: String, port: UInt16, tls: Bool)?
    var tls: BackendTLSConfig?
    var weight = 1

    static var defaults: BackendEntry { BackendEntry() }

    static let urlExample = "\"http://127.0.0.1:3001\""
    /// The smallest entry (what most backends need); `tls` is for `https://` ones.
    static var example: String { "{\"id\": \"backend1\", \"url\": \(urlExample)}" }

    static var fields: [ConfigField<BackendEntry>] {
        [
            ConfigField(key: "id", example: "\"backend1\"") { entry, value, at throws(ConfigError) in
                let id = try at.string(value)
                guard !id.isEmpty else { throw at.error("must not be empty") }
                // Ids are written to logs and headers; control characters would corrupt both.
                guard id.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
                    throw at.error("must not contain control characters, got \(JSONValue.quoted(id))")
                }
                // `ID@ADDRESS` names an endpoint of a backend given by host name.
                guard !id.contains("@") else {
                    throw at.error("must not contain '@' (it names one address of a host-name backend, as in \"api@10.0.0.7\"), got \(JSONValue.quoted(id))")
                }
                entry.id = id
            },
            ConfigField(key: "url", example: urlExample) { entry, value, at throws(ConfigError) in
                let url = try at.string(value)
                do throws(AddressSyntaxError) {
                    entry.address = try BackendConfig.parseURL(url)
                } catch {
                    throw at.error(error.problem)
                }
                entry.url = url
            },
            ConfigField(key: "tls", example: BackendTLSConfig.example) { entry, value, at throws(ConfigError) in
                entry.tls = try BackendTLSConfig.decode(value, at: at)
            },
            .integer("weight", \.weight, 1...BalanceConfig.maxWeight),
        ]
    }

    /// `[{"id": "backend1", "url": "http://127.0.0.1:3001"}]`.
    static var listExample: String { "[\(example)]" }

    /// Reads the `backends` array: every entry needs a URL, ids default to `backend<N>` (1-based,
    /// matching how people count servers) and must be unique, since they name backends in logs.
    /// `defaultTLS` is what an `https://` backend without its own `tls` gets (the upstream's
    /// `tls`, or `backend_tls` for the top-level list).
    static func decodeList(_ value: JSONValue, at location: ConfigLocation,
                           defaultIDPrefix: String = "backend", defaultTLS: BackendTLSConfig = BackendTLSConfig()) throws(ConfigError) -> [BackendConfig] {
        guard case .array(let elements) = value else {
            var problem = "expected an array of backends, got \(value.summary)"
            if case .object = value { problem += "; wrap it in [ ]" }
            throw location.error(problem)
        }
        var backends: [BackendConfig] = []
        var firstUse: [String: (index: Int, defaulted: Bool)] = [:]
        for (index, element) in elements.enumerated() {
            let elementLocation = location.element(index, example: example)
            let entry = try decode(element, at: elementLocation)
            guard let url = entry.url, let address = entry.address else {
                throw elementLocation.member("url", example: urlExample)
                    .error("missing; every backend needs the URL of its server")
            }
            let id = entry.id ?? "\(defaultIDPrefix)\(index + 1)"
            if let first = firstUse[id] {
                var unused = index + 1
                while firstUse["\(defaultIDPrefix)\(unused)"] != nil { unused += 1 }
                let idLocation = elementLocation.member("id", example: "\"\(defaultIDPrefix)\(unused)\"")
                let owner = first.defaulted ? "the default id of backends[\(first.index)]"
                                            : "already used by backends[\(first.index)]"
                throw idLocation.error(entry.id == nil
                    ? "this backend's default id \(JSONValue.quoted(id)) is \(owner); give it a unique \"id\""
                    : "\(JSONValue.quoted(id)) is \(owner); ids must be unique")
            }
            firstUse[id] = (index, entry.id == nil)
            if entry.tls != nil && !address.tls {
                throw elementLocation.member("tls", example: BackendTLSConfig.example)
                    .error("TLS settings for an http:// backend; use an https:// URL to speak TLS to it")
            }
            backends.append(BackendConfig(id: id, url: url, host: address.host, port: address.port,
                                          tls: address.tls ? entry.tls ?? defaultTLS : nil, weight: entry.weight))
        }
        return backends
    }
}

/// One member of `upstreams` as written: `{"backends": [...], "health_check": {...}}`.
struct UpstreamEntry: ConfigSection {
    var backends: JSONValue?
    var healthCheck: JSONValue?
    var tls: BackendTLSConfig?
    var balance = BalanceConfig()

    static var defaults: UpstreamEntry { UpstreamEntry() }
    static var fields: [ConfigField<UpstreamEntry>] {
        [
            ConfigField(key: "tls", example: BackendTLSConfig.example) { entry, value, at throws(ConfigError) in
                entry.tls = try BackendTLSConfig.decode(value, at: at)  // for its https:// backends
            },
            ConfigField(key: "backends", example: BackendEntry.listExample) { entry, value, _ throws(ConfigError) in
                entry.backends = value  // decoded once the upstream's name is known (default ids)
            },
            ConfigField(key: "health_check", example: HealthCheckConfig.example) { entry, value, _ throws(ConfigError) in
                entry.healthCheck = value  // decoded on top of the top-level health_check
            },
        ] + ConfigField<UpstreamEntry>.balancing(\.balance)
    }

    static var mapExample: String { "{\"api\": \(example)}" }

    /// Reads `upstreams`: names are what routes refer to, so they must be plain words.
    static func decodeMap(_ value: JSONValue, at location: ConfigLocation,
                          baseHealth: HealthCheckConfig = HealthCheckConfig()) throws(ConfigError) -> [UpstreamConfig] {
        guard case .object(let members) = value else {
            throw location.error("expected an object of named upstreams like \(mapExample)")
        }
        var upstreams: [UpstreamConfig] = []
        for (name, member) in members {
            let at = location.member(name, example: example)
            guard !name.isEmpty, name.utf8.allSatisfy({ isNameByte($0) }) else {
                throw at.error("upstream names may use letters, digits, '-', '_' and '.', got \(JSONValue.quoted(name))")
            }
            let entry = try decode(member, at: at)
            let backendsAt = at.member("backends", example: BackendEntry.listExample)
            guard let list = entry.backends else { throw backendsAt.error("missing; an upstream needs its backends") }
            let backends = try BackendEntry.decodeList(list, at: backendsAt, defaultIDPrefix: name,
                                                       defaultTLS: entry.tls ?? BackendTLSConfig())
            guard !backends.isEmpty else { throw backendsAt.error("at least one backend is required") }
            var health = baseHealth
            if let json = entry.healthCheck {
                health = try HealthCheckConfig.decode(json, at: at.member("health_check", example: HealthCheckConfig.example),
                                                      startingFrom: baseHealth)
            }
            try entry.balance.check(at: at)
            upstreams.append(UpstreamConfig(name: name, backends: backends, healthCheck: health, balance: entry.balance))
        }
        return upstreams
    }

    static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
    }
}

/// One element of `routes` as written; `upstream` is required.
struct RouteEntry: ConfigSection {
    var route = RouteConfig(upstream: "")

    static var defaults: RouteEntry { RouteEntry() }
    static let example = "{\"path\": \"/api\", \"upstream\": \"api\"}"
    static var listExample: String { "[\(example)]" }

    static var fields: [ConfigField<RouteEntry>] {
        [
            ConfigField(key: "host", example: "\"*.localhost\"") { entry, value, at throws(ConfigError) in
                entry.route.host = try parseHost(try at.string(value), at: at)
            },
            ConfigField(key: "path", example: "\"/api\"") { entry, value, at throws(ConfigError) in
                let path = try at.string(value)
                guard path.hasPrefix("/") else { throw at.error("must start with \"/\", got \(JSONValue.quoted(path))") }
                guard path.utf8.allSatisfy({ (0x21...0x7E).contains($0) && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }) else {
                    throw at.error("a path prefix cannot contain spaces, '?', '#', control or non-ASCII characters "
                        + "(percent-encode them), got \(JSONValue.quoted(path))")
                }
                entry.route.path = path
            },
            ConfigField(key: "upstream", example: "\"api\"") { entry, value, at throws(ConfigError) in
                entry.route.upstream = try at.string(value)
            },
            ConfigField(key: "strip_prefix", example: "true") { entry, value, at throws(ConfigError) in
                guard case .bool(let strip) = value else { throw at.error("expected true or false") }
                entry.route.stripPrefix = strip
            },
            ConfigField(key: "host_header", example: "\"backend\"") { entry, value, at throws(ConfigError) in
                let text = try at.string(value)
                switch text {
                case "preserve": entry.route.hostHeader = .preserve
                case "backend": entry.route.hostHeader = .backend
                default:
                    guard !text.isEmpty, text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                        throw at.error("expected \"preserve\", \"backend\" or a host value such as \"localhost:5173\", "
                            + "got \(JSONValue.quoted(text))")
                    }
                    entry.route.hostHeader = .literal(text)
                }
            },
            .section("timeouts", \.timeouts),
            ConfigField(key: "static", example: StaticFilesConfig.example) { entry, value, at throws(ConfigError) in
                var files = try StaticFilesConfig.decode(value, at: at)
                let place = at.member("root", example: "\"dist\"")
                guard !files.root.isEmpty else { throw place.error("missing; the directory to serve files from") }
                let path = CertificateEntry.resolve(files.root, against: at.file)
                guard let real = FileAccess.realPath(path) else { throw place.error("cannot use \(path): no such directory") }
                guard FileAccess.isDirectory(real) else { throw place.error("\(path) is not a directory") }
                guard access(real, R_OK | X_OK) == 0 else { throw place.error("cannot read \(path): \(String(cString: strerror(errno)))") }
                files.realRoot = real
                entry.route.staticFiles = files
            },
            ConfigField(key: "compress", example: CompressionConfig.example) { entry, value, at throws(ConfigError) in
                entry.route.compress = try CompressionConfig.decodeOrOff(value, at: at).map { .on($0) } ?? .off
            },
        ] + PolicyConfig.fields(at: \RouteEntry.route.policy)
    }

    fileprivate var timeouts: RouteTimeoutsConfig {
        get { route.timeouts }
        set { route.timeouts = newValue }
    }

    static func parseHost(_ text: String, at: ConfigLocation) throws(ConfigError) -> HostMatch {
        let host = text.lowercased()
        if host == "*" || host.isEmpty { return .any }
        let valid: (Substring) -> Bool = { name in
            !name.isEmpty && name.utf8.allSatisfy { UpstreamEntry.isNameByte($0) } && !name.hasPrefix(".") && !name.hasSuffix(".")
        }
        if host.hasPrefix("*.") {
            let suffix = host.dropFirst(2)
            guard valid(suffix) else { throw at.error("expected \"*.example.com\", got \(JSONValue.quoted(text))") }
            return .wildcard("." + suffix)
        }
        guard valid(host[...]) else {
            throw at.error("expected a host name (\"api.localhost\"), a wildcard (\"*.localhost\") or \"*\"; "
                + "no port, got \(JSONValue.quoted(text))")
        }
        return .exact(host)
    }

    static func decodeList(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> [RouteConfig] {
        guard case .array(let elements) = value else {
            throw location.error("expected an array of routes like \(listExample)")
        }
        var routes: [RouteConfig] = []
        for (index, element) in elements.enumerated() {
            let at = location.element(index, example: example)
            let entry = try decode(element, at: at)
            if entry.route.staticFiles != nil && !entry.route.upstream.isEmpty {
                throw at.member("upstream", example: "\"api\"").error("a route is answered from \"static\" files or by an \"upstream\", not both")
            }
            guard !entry.route.upstream.isEmpty || entry.route.staticFiles != nil else {
                throw at.member("upstream", example: "\"api\"").error("missing; a route needs the upstream it sends requests to (or \"static\" files)")
            }
            routes.append(entry.route)
        }
        return routes
    }
}

extension BalanceConfig {
    static let maxWeight = 1000
    static let policyExample = "\"least_request\""
    static let hashKeyExample = "\"client_ip\""

    static func decodePolicy(_ value: JSONValue, at: ConfigLocation) throws(ConfigError) -> BalancePolicy {
        let text = try at.string(value)
        if let policy = BalancePolicy(rawValue: text) { return policy }
        let names = BalancePolicy.allCases.map(\.rawValue)
        var problem = "unknown policy \(JSONValue.quoted(text)); expected one of " + names.map { JSONValue.quoted($0) }.joined(separator: ", ")
        if let match = Suggestion.closest(to: text, among: names) { problem += "; \(Suggestion.didYouMean(match))" }
        throw at.error(problem)
    }

    static func decodeHashKey(_ value: JSONValue, at: ConfigLocation) throws(ConfigError) -> HashKey {
        let text = try at.string(value)
        switch HashKey.parse(text) {
        case .success(let key): return key
        case .failure:
            throw at.error("expected \"client_ip\", \"path\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\", got \(JSONValue.quoted(text))")
        }
    }

    /// `hash_key` goes with the hashing policies, and they need it; slow start does not go with them.
    func check(at location: ConfigLocation) throws(ConfigError) {
        if policy.hashes && slowStartMs > 0 {
            throw location.member("slow_start_ms", example: "0")
                .error("slow start changes shares, and with \(JSONValue.quoted(policy.rawValue)) that moves keys; leave it out")
        }
        if policy.hashes && hashKey == nil {
            throw location.member("hash_key", example: Self.hashKeyExample)
                .error("\"balance\": \(JSONValue.quoted(policy.rawValue)) hashes a key of each request; say which one")
        }
        if !policy.hashes, let hashKey {
            throw location.member("hash_key", example: Self.hashKeyExample)
                .error("\(JSONValue.quoted(hashKey.description)) is only used by \"balance\": \"ring_hash\" or \"maglev\" (this upstream balances \(JSONValue.quoted(policy.rawValue)))")
        }
    }
}

extension String {
    /// `%XX` escapes decoded to bytes (UTF-8); nil when an escape is malformed or the bytes are
    /// not UTF-8.
    func removingPercentEncodingBytes() -> String? {
        var out: [UInt8] = []
        var bytes = utf8.makeIterator()
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case 0x30...0x39: b - 0x30
            case 0x41...0x46: b - 0x37
            case 0x61...0x66: b - 0x57
            default: nil
            }
        }
        while let b = bytes.next() {
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard let h = bytes.next().flatMap(hex), let l = bytes.next().flatMap(hex) else { return nil }
            out.append(h << 4 | l)
        }
        return String(validating: out, as: UTF8.self)
    }
}
