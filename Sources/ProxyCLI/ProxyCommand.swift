import CUV
import Glibc
import Proxy

/// The `proxy` executable: parse flags, load and check the config, run one loop until a signal.
enum ProxyCommand {
    static func run(arguments: [String]) -> Int32 {
        cuv_line_buffer_stdout()
        let options: CommandLineOptions
        do {
            options = try CommandLineOptions.parse(arguments)
        } catch {
            printError("proxy: \(error)\n\n\(CommandLineOptions.usage)")
            return 2
        }
        if options.help {
            print(CommandLineOptions.usage)
            return 0
        }
        var config: ProxyConfig
        do {
            config = try ConfigLoader.load(path: options.configPath)
        } catch {
            printError("proxy: \(error)")
            return 1
        }
        if let listen = options.listen { config.listen = listen }
        if options.check {
            print("\(options.configPath): OK")
            print("listen: \(config.listen)")
            for b in config.backends { print("backend \(b.id): \(b.url)") }
            print("health_check: GET \(config.healthCheck.path) every \(config.healthCheck.intervalMs) ms, timeout \(config.healthCheck.timeoutMs) ms, up after \(config.healthCheck.healthyThreshold), down after \(config.healthCheck.unhealthyThreshold)")
            let t = config.timeouts
            print("timeouts: connect \(t.connectMs) ms, upstream \(t.upstreamMs) ms, client_header \(t.clientHeaderMs) ms, idle \(t.idleMs) ms")
            return 0
        }

        let fdLimit = cuv_raise_nofile_limit()
        let loop = EventLoop()
        let server: ProxyServer
        do {
            server = try ProxyServer(config: config, loop: loop)
        } catch {
            printError("proxy: \(options.configPath): backends: \(error)")
            return 1
        }
        let address: SocketAddress
        do {
            address = try server.start()
        } catch {
            printError("proxy: \(error)")
            return 1
        }
        var signals: [SignalWatcher] = []
        for signum in [SIGINT, SIGTERM] {
            let watcher = SignalWatcher(loop: loop)
            watcher.onSignal = { signum in
                Log.info("signal \(signum): shutting down")
                server.shutdown()
                for w in signals { w.close() }
            }
            try? watcher.start(signum)
            signals.append(watcher)
        }
        for w in signals { w.unref() }
        // Tests and scripts wait for this exact line (it carries the real port for `:0`).
        print("proxy: listening on \(address) (\(config.backends.count) backends, fd limit \(fdLimit))")
        cuv_flush_stdout()
        loop.run()
        return 0
    }

    private static func printError(_ message: String) {
        var line = Array((message + "\n").utf8)
        _ = line.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
