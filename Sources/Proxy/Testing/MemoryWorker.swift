/// One proxy worker whose clients and backends are `MemoryStream`s: a `ProxyServer` built from a
/// JSON configuration on a libuv loop that is never run for I/O, so the HTTP/1 connection and the
/// exchange run exactly as in production, with no sockets and no timing. For the connection tests
/// and the fuzz targets (which must exercise the production readers and writers, not a model).
///
/// A request routed to a backend opens an upstream connection whose stream is a `MemoryStream`
/// (`upstreams`, in the order opened): the test plays the backend — reads what the proxy sent
/// (`received`), answers (`peerSends`), closes (`peerEnds`). Connects complete on `settle()`,
/// or fail with `connectResult`. Deadlines never fire (the loop's timers do not run).
/// Threading: the caller's thread; one worker per thread.
public final class MemoryWorker {
    public let loop = EventLoop()
    let server: ProxyServer
    let pool = ExchangeStatePool()
    /// Client connections opened with `connect`, and upstream connections the proxy opened.
    public private(set) var clients: [MemoryStream] = []
    public private(set) var upstreams: [MemoryStream] = []
    /// What the next upstream connects report: 0, or an error code (`UV_ECONNREFUSED`).
    public var connectResult: Int32 = 0

    /// `json`: a configuration as in a config file (its backend addresses are never contacted).
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
        server.upstreamStreams = { [unowned self] _ in
            let stream = MemoryStream()
            stream.connectResult = connectResult
            upstreams.append(stream)
            return stream
        }
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
        clients.append(stream)
        server.adopt(stream, admin: admin, exchangeStates: pool)
        return stream
    }

    /// Spare exchange states in the worker's pool (idle connections hold none).
    public var spareExchangeStates: Int { pool.count }

    /// Runs what a loop would report later (connects, held input, shutdown completions) on every
    /// stream, until nothing is left.
    public func settle() {
        var ran = 1
        while ran > 0 {
            ran = 0
            for s in clients { ran += s.runPending() }
            for s in upstreams { ran += s.runPending() }
        }
    }

    /// Closes every connection (clients, and pooled upstream connections), then runs the loop
    /// until their handles are gone; the next test starts from nothing.
    public func closeAllConnections() {
        server.closeAllConnections()
        for b in server.settings.backends { b.pool.closeAll() }
        clients.removeAll()
        upstreams.removeAll()
        loop.runOnce(wait: false)
    }
}
