/// One proxy worker whose clients are `MemoryStream`s: a `ProxyServer` built from a JSON
/// configuration on a libuv loop that is never run for I/O, so the HTTP/1 connection code runs
/// exactly as in production, with no sockets and no timing. For the connection tests and the
/// request fuzz target (which must exercise the production reader, not a model of it).
///
/// Only what the proxy answers itself works here (admin endpoints, errors, 404s on the admin
/// listener): a request routed to a backend would open a real connection that the loop never
/// completes. Threading: the caller's thread; one worker per thread.
public final class MemoryWorker {
    public let loop = EventLoop()
    let server: ProxyServer
    let pool = ExchangeStatePool()

    /// `json`: a configuration as in a config file (its backends are never contacted).
    public init(config json: String) throws {
        let config = try ConfigLoader.parse(Array(json.utf8), file: "memory.json")
        var backends: [SharedBackend] = []
        for b in config.allBackends {
            backends.append(SharedBackend(config: b, address: try SocketAddress.resolve(host: b.host, port: b.port), workers: 1))
        }
        let generation = ConfigGeneration(number: 1, config: config, backends: backends,
                                          upstreams: SharedUpstream.list(for: config, workers: 1), maxConnections: 1_000_000)
        server = ProxyServer(worker: 0, workerCount: 1, generation: generation, connectionCount: ConnectionCount(),
                             metrics: ProxyMetrics(workers: 1, accessLog: AccessLogWriter()), loop: loop)
    }

    deinit {
        server.shutdown()
        loop.closeAllHandles()
        loop.run()
    }

    /// A new client connection, served from now on; `admin`: as if accepted on `admin.listen`
    /// (every path the proxy does not serve itself is a 404 there, so nothing is proxied).
    public func connect(admin: Bool = false) -> MemoryStream {
        let stream = MemoryStream()
        server.adopt(stream, admin: admin, exchangeStates: pool)
        return stream
    }

    /// Spare exchange states in the worker's pool (idle connections hold none).
    public var spareExchangeStates: Int { pool.count }

    /// Closes every connection, then runs the loop until their handles are gone.
    public func closeAllConnections() {
        server.closeAllConnections()
        loop.runOnce(wait: false)
    }
}
