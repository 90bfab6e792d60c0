/// The proxy on one loop: listener, backends with their pools, balancer and health checker.
///
/// Threading: created and used on the thread that runs `loop`.
public final class ProxyServer {
    public let loop: EventLoop
    public let config: ProxyConfig
    public let backends: [Backend]
    var balancer = RoundRobinBalancer()
    let headLimits: HeadLimits
    private let listener: TCPListener
    private let healthChecker: HealthChecker
    private let poolSweeper: Timer
    /// Open client connections.
    public private(set) var activeClients = 0
    private var clients: [ObjectIdentifier: ClientConnection] = [:]
    /// Set once shutdown began: responses carry `Connection: close`.
    public private(set) var isDraining = false

    /// Resolves the backends' addresses (blocking DNS: start-up only).
    public init(config: ProxyConfig, loop: EventLoop) throws(AddressError) {
        self.loop = loop
        self.config = config
        var backends: [Backend] = []
        for b in config.backends {
            let address = try SocketAddress.resolve(host: b.host, port: b.port)
            let pool = UpstreamPool(maxIdle: config.pool.maxIdlePerBackend, idleTimeoutMs: UInt64(config.pool.idleTimeoutMs))
            let authority = b.host.contains(":") ? "[\(b.host)]:\(b.port)" : "\(b.host):\(b.port)"
            backends.append(Backend(id: b.id, url: b.url, address: address, authority: authority, pool: pool))
        }
        self.backends = backends
        headLimits = HeadLimits(config.limits)
        listener = TCPListener(loop: loop)
        healthChecker = HealthChecker(loop: loop, backends: backends, config: config.healthCheck)
        poolSweeper = Timer(loop: loop)
    }

    /// Starts listening and health checking; returns the bound address (the real port for `:0`).
    @discardableResult
    public func start() throws(ProxyStartError) -> SocketAddress {
        let host = config.listen.host.hasPrefix("[") ? String(config.listen.host.dropFirst().dropLast()) : config.listen.host
        guard let address = SocketAddress(ip: host, port: config.listen.port)
                ?? (try? SocketAddress.resolve(host: host, port: config.listen.port)) else {
            throw ProxyStartError(message: "listen: cannot use address \"\(config.listen)\"")
        }
        listener.onAccept = { [unowned self] stream in self.accept(stream) }
        listener.onAcceptError = { code in Log.warning("accept failed: \(UVError(code))") }
        do {
            try listener.listen(on: address)
        } catch {
            throw ProxyStartError(message: "cannot listen on \(address): \(error)")
        }
        healthChecker.start()
        let sweepMs = UInt64(max(config.pool.idleTimeoutMs / 4, 50))
        poolSweeper.onFire = { [unowned self] in
            let now = self.loop.now
            for b in self.backends { b.pool.sweep(now: now) }
        }
        poolSweeper.start(timeoutMs: sweepMs, repeatMs: sweepMs)
        return listener.localAddress ?? address
    }

    private func accept(_ stream: TCPStream) {
        let connection = ClientConnection(server: self, client: stream)
        activeClients += 1
        clients[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    func clientClosed(_ connection: ClientConnection) {
        activeClients -= 1
        clients[ObjectIdentifier(connection)] = nil
    }

    /// Writes the proxy's own answer for `request` into `out` if it is one of the proxy's paths.
    func answerLocally(_ request: RequestHead, keepAlive: Bool, into out: inout [UInt8]) -> Bool {
        guard HealthEndpoint.matches(request) else { return false }
        let (status, body) = HealthEndpoint.render(backends)
        ErrorResponse.write(status: status, contentType: "application/json", body: body, keepAlive: keepAlive,
                            headOnly: request.isHEAD, into: &out)
        return true
    }

    /// Stops accepting and closes every connection and timer; `loop.run()` then returns.
    public func shutdown() {
        isDraining = true
        listener.close()
        healthChecker.stop()
        poolSweeper.close()
        for c in Array(clients.values) { c.forceClose() }
        for b in backends { b.pool.closeAll() }
    }
}

public struct ProxyStartError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
