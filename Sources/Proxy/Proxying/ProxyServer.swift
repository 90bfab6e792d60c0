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
    /// `limits.allowed_methods` as bytes, and the `Allow` header line a 405 carries.
    let allowedMethods: [[UInt8]]
    let allowHeader: String
    /// Connections closed at once because `max_connections` were open.
    public private(set) var connectionsRefused = 0
    private var lastAcceptWarning: UInt64 = 0
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
            let authority = AddressSyntax.join(host: b.host, port: b.port)
            backends.append(Backend(id: b.id, url: b.url, address: address, authority: authority, pool: pool))
        }
        self.backends = backends
        headLimits = HeadLimits(config.limits)
        allowedMethods = config.limits.allowedMethods.map { Array($0.utf8) }
        allowHeader = config.limits.allowedMethods.isEmpty ? "" : "Allow: \(config.limits.allowedMethods.joined(separator: ", "))\r\n"
        listener = TCPListener(loop: loop)
        healthChecker = HealthChecker(loop: loop, backends: backends, config: config.healthCheck)
        poolSweeper = Timer(loop: loop)
    }

    /// Starts listening and health checking; returns the bound address (the real port for `:0`).
    @discardableResult
    public func start() throws(ProxyStartError) -> SocketAddress {
        let host = config.listen.host  // stored without IPv6 brackets
        guard let address = SocketAddress(ip: host, port: config.listen.port)
                ?? (try? SocketAddress.resolve(host: host, port: config.listen.port)) else {
            throw ProxyStartError(message: "listen: cannot use address \"\(config.listen)\"")
        }
        listener.onAccept = { [unowned self] stream in self.accept(stream) }
        listener.onAcceptError = { [unowned self] code in
            // Out of descriptors (EMFILE): libuv sheds the connection with its reserve descriptor,
            // so the loop does not spin; one warning a second is enough.
            self.warnAtMostEverySecond("accept failed: \(UVError(code)) — raise the file-descriptor limit or lower limits.max_connections")
        }
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
        guard activeClients < config.limits.maxConnections else {
            // Closed at once rather than queued: the client can retry elsewhere.
            connectionsRefused += 1
            stream.close()
            warnAtMostEverySecond("limits.max_connections (\(config.limits.maxConnections)) reached: closing new connections")
            return
        }
        let connection = ClientConnection(server: self, client: stream)
        activeClients += 1
        clients[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    private func warnAtMostEverySecond(_ message: String) {
        let now = loop.now
        guard lastAcceptWarning == 0 || now &- lastAcceptWarning >= 1000 else { return }
        lastAcceptWarning = now
        Log.warning(message)
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
