import CUV
import Glibc
import Proxy

/// The `proxy` executable: parse flags, load and check the config, then hand over to the
/// `Supervisor` until a signal stops it.
enum ProxyCommand {
    static func run(arguments: [String]) -> Int32 {
        cuv_line_buffer_stdout()
        if let first = arguments.first, first == "trust" || first == "untrust" {
            let rest = Array(arguments.dropFirst())
            guard rest.isEmpty || rest == ["--no-system"] else {
                Log.plain("proxy \(first): unexpected \(rest.joined(separator: " ")); the only option is --no-system (leave the system store alone)")
                return 2
            }
            return LocalTrust.run(trust: first == "trust", system: rest.isEmpty)
        }
        let options: CommandLineOptions
        do {
            options = try CommandLineOptions.parse(arguments)
        } catch {
            // One line that names the problem; the whole usage only on request.
            Log.plain("proxy: \(error) (see `proxy --help`)")
            return 2
        }
        if options.help {
            print(CommandLineOptions.usage)
            return 0
        }
        if options.version {
            print("proxy \(ProxyVersion.current) (\(Platform.libraryVersions()))")
            return 0
        }
        let config: ProxyConfig
        do {
            config = options.targets.isEmpty
                ? Supervisor.applying(options, to: try ConfigLoader.load(path: options.configPath))
                : try QuickStart.config(options)
        } catch {
            Log.plain("proxy: \(error)" + (options.targets.isEmpty ? "" : " (see `proxy --help`)"))
            return options.targets.isEmpty ? 1 : 2
        }
        if let problem = SelfForwarding.problem(config) {
            Log.plain("proxy: \(options.targets.isEmpty ? options.configPath + ": " : "")\(problem)")
            return options.targets.isEmpty ? 1 : 2
        }
        if options.check {
            // Certificates first: "OK" is printed only for a configuration that would start.
            var listenLines: [String] = []
            for (i, listener) in config.listeners.enumerated() {
                let proxied = listener.proxyProtocol ? " (PROXY protocol header first, v1 or v2)" : ""
                guard let tls = listener.tls else {
                    listenLines.append("listen: \(listener.address)" + (listener.redirectToHTTPS ? " (redirects to https)" : "") + proxied)
                    continue
                }
                if listener.proxyProtocol { listenLines.append("listen: \(listener.address)\(proxied)") }
                if tls.isLocal {
                    listenLines.append("listen: \(listener.address) https, certificates from the local CA in \(LocalCertificateAuthority.directory()) "
                        + "(issued per name; `proxy trust` makes browsers accept it)")
                    continue
                }
                listenLines.append("listen: \(listener.address) https, TLS \(tls.minVersion)+, alpn \(tls.alpn.joined(separator: ","))"
                    + (tls.hsts.map { ", hsts \"\($0)\"" } ?? "") + ", handshake timeout \(tls.handshakeTimeoutMs) ms")
                let context: TLSContext
                do {
                    context = try TLSContext(certificates: tls.certificates.map { ($0.cert, $0.key) }, minVersion: tls.minVersion, alpn: tls.alpn)
                } catch {
                    Log.plain("proxy: \(options.configPath): listen[\(i)].tls: \(error.message)")
                    return 1
                }
                let now = Int64(time(nil))
                for (files, facts) in zip(tls.certificates, context.certificates) {
                    let days = (facts.notAfter - now) / 86400
                    listenLines.append("  certificate \(files.cert): \(facts.names.joined(separator: ", ")); expires \(Self.utc(facts.notAfter)) (in \(days) days)")
                    if days < 14 { Log.warning("\(files.cert) expires in \(days) days") }
                }
            }
            // What starting would do first: bind every listen address and look every backend
            // host name up. Either failing fails the check, as it would fail the start.
            let source = options.targets.isEmpty ? options.configPath + ": " : ""
            for (what, address) in config.listeners.map({ ("listen", $0.address) }) + (config.admin.listen.map { [("admin.listen", $0)] } ?? []) {
                if case .failure(let problem) = ListenSockets.probeBind(address) {
                    Log.plain("proxy: \(source)\(what) \(address): \(problem.message)")
                    return options.targets.isEmpty ? 1 : 2
                }
            }
            var lookedUp: [String: String] = [:]
            for b in config.allBackends where !b.hasIPLiteralHost && lookedUp[b.host] == nil {
                do {
                    let found = try SocketAddress.resolveAll(host: b.host, port: b.port, servers: Supervisor.dnsServers(config))
                    lookedUp[b.host] = found.addresses.map(\.ipString).joined(separator: ", ")
                } catch {
                    Log.plain("proxy: \(source)backend \(b.id): \(b.host) does not resolve: \(error.message)")
                    return options.targets.isEmpty ? 1 : 2
                }
            }
            print(options.targets.isEmpty ? "\(options.configPath): OK" : "--to: OK")
            print("checked: every listen address can be bound"
                + (lookedUp.isEmpty ? "" : "; every backend host name resolves"))
            for line in listenLines { print(line) }
            let workers = Supervisor.workerCount(config)
            print("workers: \(workers)\(config.workers == 0 ? " (one per CPU)" : ""), shutdown grace \(config.shutdownGraceMs) ms")
            for upstream in config.allUpstreams {
                let h = upstream.healthCheck
                let probe = h.path.map { "GET \($0)" } ?? "connect"
                print("upstream \(upstream.name): health check \(probe) every \(h.intervalMs) ms, timeout \(h.timeoutMs) ms, "
                    + "up after \(h.healthyThreshold), down after \(h.unhealthyThreshold)")
                for line in upstream.balance.summary { print("  \(line)") }
                if upstream.backends.contains(where: { !$0.hasIPLiteralHost }) {
                    let again = upstream.balance.resolveIntervalMs
                    print("  backend host names: " + (again == 0 ? "resolved at start (and when a reload changes them) only"
                        : "resolved again every \(again) ms (sooner at a shorter record TTL)")
                        + " through " + (config.resolver.map { "DNS servers \($0.servers.joined(separator: ", "))" } ?? "the system resolver"))
                }
                for b in upstream.backends {
                    print("  backend \(b.id): \(b.url)" + (b.weight != 1 ? " weight \(b.weight)" : "")
                        + (lookedUp[b.host].map { " (\(b.host) is \($0))" } ?? ""))
                }
            }
            for line in config.routingTable { print(line) }
            for line in config.policySummary { print(line) }
            if let redis = config.redis {
                print("redis: \(redis.host):\(redis.port) database \(redis.database)\(redis.password != nil ? ", with a password" : ""), "
                    + "timeout \(redis.timeoutMs) ms, on_error \(redis.onError.rawValue), keys under \"\(redis.keyPrefix)\"")
            }
            let t = config.timeouts
            print("timeouts: connect \(t.connectMs) ms, upstream (response head) \(t.upstreamMs) ms, response_idle \(t.responseIdleMs) ms, "
                + "event_stream_idle \(t.eventStreamIdleMs) ms, client_header \(t.clientHeaderMs) ms, client_body \(t.clientBodyMs) ms, "
                + "idle \(t.idleMs) ms, tunnel_idle \(t.tunnelIdleMs) ms")
            let log = config.accessLog
            print("access log: " + (log.pathText.map { "\($0), \(log.format.rawValue)" } ?? "off"))
            let admin = config.admin
            let paths = admin.namedPaths.map(\.path).joined(separator: ", ")
            print("admin: \(paths.isEmpty ? "no endpoints" : paths) "
                + (admin.listen.map { "(metrics and status on \($0))" } ?? "(metrics and status to loopback clients only)"))
            // The limit the proxy would raise itself to at start: the hard one.
            let fdLimit = DescriptorLimit.hard
            let budget = ConnectionBudget.effective(config.limits, fdLimit: fdLimit, workers: workers,
                                                    backends: config.allBackends.count)
            let limitText = fdLimit > 0 ? String(fdLimit) : "unknown"
            print("max_connections: \(budget.maxConnections) "
                + (config.limits.maxConnections == nil ? "(derived from the fd limit \(limitText))" : "(configured; fd limit \(limitText))"))
            if let warning = budget.warning { Log.warning(warning) }
            return 0
        }
        let fdLimit = DescriptorLimit.raiseToHard()
        return Supervisor.run(config: config, options: options, fdLimit: fdLimit)
    }

    /// `2027-03-01 12:00:00 UTC`.
    static func utc(_ seconds: Int64) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let n = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
