/// The configuration `proxy --to …` builds when there is no config file: the one-line dev
/// gateway (`caddy reverse-proxy --to` territory).
///
/// `--to URL` adds a backend to the default pool; `--to /api=URL` adds one to an upstream named
/// after the path (`api`) with a route for that prefix; the same path given twice load-balances.
/// Dev servers rarely have a health URL and restart often, so backends are checked by connecting,
/// every second, up or down after one result.
public enum QuickStart {
    public static let healthCheck = HealthCheckConfig(path: nil, intervalMs: 1000, timeoutMs: 1000,
                                                      healthyThreshold: 1, unhealthyThreshold: 1)

    /// Dev servers restart: a request that finds them all down still tries one connect.
    static var balance: BalanceConfig {
        var b = BalanceConfig()
        b.tryWhenAllDown = true
        return b
    }

    /// The gateway's port when `--listen` is not given.
    public static let defaultPort: UInt16 = 8080

    /// `ipv6Loopback`: whether `[::1]` can be bound here (a bare port listens there too).
    /// `ipv6Free`: whether `[::1]:PORT` may be bound (tests; nil: probe it).
    public static func config(_ options: CommandLineOptions, ipv6Loopback: Bool? = nil, ipv6Free: Bool? = nil) throws(CommandLineError) -> ProxyConfig {
        let ipv6Loopback = ipv6Loopback ?? Platform.canBindIPv6Loopback()
        // A dev gateway exposes dev servers: a bare port (or none) binds loopback only, IPv4 and
        // IPv6 (a browser may try either for `localhost`); all interfaces need an explicit
        // address (`--listen 0.0.0.0:3000`).
        var listen = [options.listen ?? ListenAddress(host: "127.0.0.1", port: defaultPort)]
        if options.listen == nil || options.listenIsBarePort {
            listen[0].host = "127.0.0.1"
            // Port 0 would give the two listeners two different ports: IPv4 only then.
            // [::1] only when free: a dev server bound to localhost may hold it (IPv4 then).
            let v6 = ListenAddress(host: "::1", port: listen[0].port)
            if ipv6Loopback && listen[0].port != 0, (ipv6Free ?? { if case .success = ListenSockets.probeBind(v6) { true } else { false } }()) {
                listen.append(v6)
            }
        }
        var config = ProxyConfig(listen: listen[0], healthCheck: healthCheck)
        config.balance = balance
        config.listeners = listen.map { ListenerConfig(address: $0, tls: options.https ? .local : nil) }
        if let path = options.accessLogPath {
            switch path {
            case "off": config.accessLog.destination = .off
            case "stdout": config.accessLog.destination = .stdout
            case "stderr": config.accessLog.destination = .stderr
            default: config.accessLog.destination = .file(path)
            }
        }
        if let format = options.accessLogFormat { config.accessLog.format = format }
        config.inspect.enabled = options.inspect
        if options.compress { config.compress = CompressionConfig() }
        var byPath: [(path: String, urls: [String])] = []
        for target in options.targets {
            var path = ""
            var url = target
            if !target.hasPrefix("/"), let equals = target.firstIndex(of: "="), !target[..<equals].contains("/") {
                let prefix = target[..<equals]
                throw CommandLineError("--to \(target): a path prefix starts with /; write --to /\(prefix)=\(target[target.index(after: equals)...])")
            }
            if !target.contains("=") && !target.contains("://") {
                // `--to ./dist`: serve a directory (a single-page app: unknown paths get its index).
                try addDirectory(target, at: "", target: target, to: &config)
                continue
            }
            if target.hasPrefix("/") {
                guard let equals = target.firstIndex(of: "=") else {
                    throw CommandLineError("--to \(target): expected PATH=URL, e.g. --to /api=http://localhost:8080")
                }
                path = String(target[..<equals])
                url = String(target[target.index(after: equals)...])
                guard path.utf8.allSatisfy({ (0x21...0x7E).contains($0) && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }) else {
                    throw CommandLineError("--to \(target): the path may not contain spaces, '?' or '#'")
                }
            }
            if !url.contains("://") {
                // `--to /assets=./public`: that directory, under the prefix (stripped).
                try addDirectory(url, at: path, target: target, to: &config)
                continue
            }
            if let i = byPath.firstIndex(where: { $0.path == path }) { byPath[i].urls.append(url) } else { byPath.append((path, [url])) }
        }
        // "backend" is taken too: the default pool's ids are backend1, backend2…
        var names: Set<String> = [UpstreamConfig.defaultName, "backend"]
        for (path, urls) in byPath {
            let name = path.isEmpty ? UpstreamConfig.defaultName : uniqueName(for: path, taken: &names)
            var backends: [BackendConfig] = []
            for (i, url) in urls.enumerated() {
                let address: (host: String, port: UInt16, tls: Bool)
                do throws(AddressSyntaxError) {
                    address = try BackendConfig.parseURL(url)
                } catch {
                    throw CommandLineError("--to \(path.isEmpty ? url : "\(path)=\(url)"): \(error.problem)")
                }
                let id = path.isEmpty ? "backend\(i + 1)" : "\(name)\(i + 1)"
                backends.append(BackendConfig(id: id, url: url, host: address.host, port: address.port,
                                              tls: address.tls ? BackendTLSConfig() : nil))
            }
            if path.isEmpty {
                config.backends = backends
            } else {
                config.upstreams.append(UpstreamConfig(name: name, backends: backends, healthCheck: healthCheck, balance: balance))
                config.routes.append(RouteConfig(path: path, upstream: name, stripPrefix: options.stripPrefix,
                                                 hostHeader: options.hostHeader ?? .preserve))
            }
        }
        if !config.backends.isEmpty, let policy = options.hostHeader, policy != .preserve {
            // The default pool gets the policy too: an explicit catch-all route.
            config.routes.append(RouteConfig(path: "/", upstream: UpstreamConfig.defaultName, hostHeader: policy))
        }
        // One answer per path: a directory and a URL for the same one would hide one of them.
        var seen: Set<String> = []
        for route in config.routes where !seen.insert(route.path).inserted {
            throw CommandLineError("--to: \(route.path) is given both a directory and a URL (or twice); give each path one kind of target")
        }
        if !config.backends.isEmpty, config.routes.contains(where: { $0.path == "/" && $0.staticFiles != nil }) {
            throw CommandLineError("--to: / is given both a directory and a URL; serve the directory under a prefix (--to /assets=DIR)")
        }
        ConfigLoader.addStaticUpstreams(&config)
        if let workers = options.workers { config.workers = workers }
        config.timeouts = options.appliedTimeouts(to: config.timeouts)
        return config
    }

    /// A static route for `directory` at `path` ("" → `/`, with `spa_fallback`).
    private static func addDirectory(_ directory: String, at path: String, target: String, to config: inout ProxyConfig) throws(CommandLineError) {
        guard let real = FileAccess.realPath(directory), FileAccess.isDirectory(real) else {
            throw CommandLineError("--to \(target): \(directory) is not a directory (a backend URL starts with http:// or https://)")
        }
        var files = StaticFilesConfig()
        files.root = directory
        files.realRoot = real
        files.spaFallback = path.isEmpty
        var route = RouteConfig(path: path.isEmpty ? "/" : path, upstream: "", stripPrefix: !path.isEmpty)
        route.staticFiles = files
        config.routes.append(route)
    }

    /// `/api/v1` → `api-v1`.
    private static func uniqueName(for path: String, taken: inout Set<String>) -> String {
        let words = path.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "_" && $0 != "." }).joined(separator: "-")
        let base = words.isEmpty ? "root" : words
        var name = base
        var n = 2
        while taken.contains(name) { name = "\(base)-\(n)"; n += 1 }
        taken.insert(name)
        return name
    }
}
