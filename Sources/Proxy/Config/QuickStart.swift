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

    public static func config(_ options: CommandLineOptions) throws(CommandLineError) -> ProxyConfig {
        var config = ProxyConfig(listen: options.listen ?? ListenAddress(host: ListenAddress.allInterfaces, port: 8080),
                                 healthCheck: healthCheck)
        if options.https { config.listeners[0].tls = .local }
        var byPath: [(path: String, urls: [String])] = []
        for target in options.targets {
            var path = ""
            var url = target
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
                config.upstreams.append(UpstreamConfig(name: name, backends: backends, healthCheck: healthCheck))
                config.routes.append(RouteConfig(path: path, upstream: name, stripPrefix: options.stripPrefix,
                                                 hostHeader: options.hostHeader ?? .preserve))
            }
        }
        if !config.backends.isEmpty, let policy = options.hostHeader, policy != .preserve {
            // The default pool gets the policy too: an explicit catch-all route.
            config.routes.append(RouteConfig(path: "/", upstream: UpstreamConfig.defaultName, hostHeader: policy))
        }
        if let workers = options.workers { config.workers = workers }
        config.timeouts = options.timeouts.applied(to: config.timeouts)
        return config
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
