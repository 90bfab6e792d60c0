import CUV
import Glibc
import Proxy

/// The `proxy` executable: parse flags, load and check the config, then hand over to the
/// `Supervisor` until a signal stops it.
enum ProxyCommand {
    static func run(arguments: [String]) -> Int32 {
        cuv_line_buffer_stdout()
        let options: CommandLineOptions
        do {
            options = try CommandLineOptions.parse(arguments)
        } catch {
            Log.plain("proxy: \(error)\n\n\(CommandLineOptions.usage)")
            return 2
        }
        if options.help {
            print(CommandLineOptions.usage)
            return 0
        }
        let config: ProxyConfig
        do {
            config = Supervisor.applying(options, to: try ConfigLoader.load(path: options.configPath))
        } catch {
            Log.plain("proxy: \(error)")
            return 1
        }
        if options.check {
            print("\(options.configPath): OK")
            print("listen: \(config.listen)")
            let workers = Supervisor.workerCount(config)
            print("workers: \(workers)\(config.workers == 0 ? " (one per CPU)" : ""), shutdown grace \(config.shutdownGraceMs) ms")
            for b in config.backends { print("backend \(b.id): \(b.url)") }
            print("health_check: GET \(config.healthCheck.path) every \(config.healthCheck.intervalMs) ms, timeout \(config.healthCheck.timeoutMs) ms, up after \(config.healthCheck.healthyThreshold), down after \(config.healthCheck.unhealthyThreshold)")
            let t = config.timeouts
            print("timeouts: connect \(t.connectMs) ms, upstream \(t.upstreamMs) ms, client_header \(t.clientHeaderMs) ms, idle \(t.idleMs) ms")
            return 0
        }
        let fdLimit = cuv_raise_nofile_limit()
        return Supervisor.run(config: config, options: options, fdLimit: fdLimit)
    }
}
