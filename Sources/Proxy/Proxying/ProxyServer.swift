import Glibc
import Synchronization

/// The proxy on one worker loop: its listener, its view of the backends (with its own pools),
/// its balancer and its client connections. Nothing here is shared with other workers; health
/// verdicts arrive through `SharedBackend`, new configurations through `apply(_:listening:)`.
///
/// Threading: created and used on the thread that runs `loop`.
public final class ProxyServer {
    public let loop: EventLoop
    /// This worker's number (0-based) and how many there are, shown by `/_health`.
    public let worker: Int
    public let workerCount: Int
    /// The configuration new exchanges start with.
    private(set) var settings: ServerSettings
    /// One entry per `config.listeners` address, in that order.
    private var listeners: [WorkerListener] = []
    private let acceptResumer: Timer
    /// While `max_connections` is reached and a connection waits: looks for room again (a client
    /// closing on another worker frees it without telling this one).
    private let roomWatcher: Timer
    private let poolSweeper: Timer
    /// This worker's `X-Request-Id` source.
    var requestIDs = RequestIDGenerator()
    /// Spare per-exchange state for this worker's connections (idle connections hold none).
    let exchangeStates = ExchangeStatePool()
    /// Responses being compressed now (`compress.max_streams` bounds it per worker).
    var compressorsInUse = 0
    /// Makes the streams of new upstream connections: TCP, unless a test supplies its own
    /// (`MemoryWorker`'s in-memory backends).
    var upstreamStreams: ((Backend) -> any ConnectingStream)?

    func makeUpstreamStream(for backend: Backend) -> any ConnectingStream {
        if let upstreamStreams { return upstreamStreams(backend) }
        if let files = backend.shared.config.staticFiles { return StaticFileStream(loop: loop, files: files) }
        let tcp = TCPStream(loop: loop)
        guard let context = backend.shared.tls else { return tcp }
        // The handshake is part of connecting: `timeouts.connect_ms` bounds both (the exchange's deadline).
        // The only failure is the engine out of memory, where any Swift allocation traps as well.
        guard let tls = try? TLSStream(connecting: tcp, context: context, serverName: backend.shared.tlsServerName,
                                       handshakeTimeoutMs: 0, resumption: backend.tlsResumption) else {
            fatalError("out of memory for a TLS session")
        }
        tls.onResumption = { [unowned backend] resumption in backend.tlsResumption = resumption }
        return tls
    }
    /// Open client connections and idle pooled connections of all workers together, against
    /// `limits.max_connections`.
    private let connectionCount: ConnectionCount
    /// This worker's idle pooled upstream connections, published into `connectionCount`.
    private let idleTally: IdleUpstreamTally
    /// The process's metrics, and this worker's slab of them (`WorkerStats`).
    let metrics: ProxyMetrics
    let stats: CounterSlab
    /// This worker's access log buffer; nil while `access_log.path` is null.
    private(set) var accessLog: AccessLogBuffer?
    /// The admin listener (`admin.listen`), on worker 0 only.
    private var adminListener: TCPListener?
    /// Exchanges waiting for a JWKS fetch (`JWTAuthenticator.Verdict.waitForKeys`), resumed by
    /// `keysFetched()`. Each resumes under the exchange's own staleness guard.
    private var keyWaiters: [() -> Void] = []
    /// Open client connections.
    public private(set) var activeClients = 0
    private var clients: [ObjectIdentifier: any DownstreamConnectionControl] = [:]
    private var lastAcceptWarning: UInt64 = 0
    /// Set once a graceful shutdown began: responses carry `Connection: close` and connections
    /// close after their exchange.
    public private(set) var isDraining = false
    private var onDrained: (() -> Void)?
    /// This worker's connection to the top-level `redis` (global rate limits), kept across
    /// generations with the same `redis`; nil without one.
    private(set) var redis: RedisClient?

    public init(worker: Int, workerCount: Int, generation: ConfigGeneration, connectionCount: ConnectionCount,
                metrics: ProxyMetrics, loop: EventLoop) {
        self.loop = loop
        self.worker = worker
        self.workerCount = workerCount
        self.connectionCount = connectionCount
        self.metrics = metrics
        stats = metrics.workers[worker]
        idleTally = IdleUpstreamTally(worker: worker, shared: connectionCount)
        redis = generation.config.redis.map { RedisClient(config: $0, loop: loop) }
        settings = ServerSettings(generation, worker: worker, previous: [], redis: redis)
        if settings.router.routes.contains(where: { $0.globalLimiter != nil }) { redis?.warmUp() }
        poolSweeper = Timer(loop: loop)
        acceptResumer = Timer(loop: loop)
        roomWatcher = Timer(loop: loop)
        configureAccessLog()
        adoptPools()
    }

    /// Counts every pool of `settings` in this worker's idle tally (pools kept across a reload already are).
    private func adoptPools() {
        for b in settings.backends where b.pool.tally !== idleTally { b.pool.tally = idleTally }
    }

    /// Creates, reconfigures or drops the access log buffer to match `settings`.
    private func configureAccessLog() {
        let config = settings.config.accessLog
        if !config.isEnabled {
            accessLog?.close()
            accessLog = nil
        } else if let log = accessLog {
            log.configure(config)
        } else {
            accessLog = AccessLogBuffer(loop: loop, writer: metrics.accessLog, config: config)
        }
    }

    /// Serves the admin endpoints on `descriptor` (`admin.listen`, adopted and owned from here).
    public func startAdmin(listeningOn descriptor: Int32) throws(ProxyStartError) {
        let listener = TCPListener(loop: loop)
        listener.onAccept = { [unowned self] stream in self.adopt(stream, admin: true, exchangeStates: self.exchangeStates) }
        listener.onAcceptError = { [unowned self] code in self.warnAtMostEverySecond("admin accept failed: \(UVError(code))") }
        do {
            try listener.adopt(descriptor: descriptor)
        } catch {
            listener.close()  // and with it the descriptor (see `adopt`)
            throw ProxyStartError(message: "admin.listen: cannot accept on the listening socket: \(error)")
        }
        adminListener = listener
    }


    /// Starts accepting on `descriptors` (bound, listening sockets from `ListenSockets`, one per
    /// entry of `config.listeners`, which the server now owns) and sweeping idle pooled connections.
    public func start(listeningOn descriptors: [Int32]) throws(ProxyStartError) {
        listeners = descriptors.enumerated().map { WorkerListener(index: $0.offset, descriptor: $0.element) }  // owned from here on
        for l in listeners { l.handle = try makeListener(l) }
        acceptResumer.onFire = { [unowned self] in self.resumeAccepting() }
        roomWatcher.onFire = { [unowned self] in self.acceptWaitingIfRoom() }
        poolSweeper.onFire = { [unowned self] in
            let now = self.loop.now
            for b in self.settings.backends { b.pool.sweep(now: now) }
            if self.connectionCount.idleConnectionsWanted {  // a client waits on another worker
                for b in self.settings.backends { b.pool.closeAll() }
            }
            for u in self.settings.upstreams { u.noticeHealthChanges() }
            self.exchangeStates.trim()
        }
        restartPoolSweeper()
    }

    /// Starts accepting on one listening socket (`ListenSockets`, owned here).
    public func start(listeningOn descriptor: Int32) throws(ProxyStartError) {
        try start(listeningOn: [descriptor])
    }

    /// A libuv listener on a duplicate of `listener`'s descriptor.
    private func makeListener(_ listener: WorkerListener) throws(ProxyStartError) -> TCPListener {
        let duplicate = fcntl(listener.descriptor, F_DUPFD_CLOEXEC, 0)
        guard duplicate >= 0 else {
            throw ProxyStartError(message: "worker \(worker): cannot duplicate the listening socket: \(UVError(-errno))")
        }
        let handle = TCPListener(loop: loop)
        handle.onAccept = { [unowned self, unowned listener] stream in self.accept(stream, on: listener.index) }
        handle.onAcceptError = { [unowned self] code in self.acceptFailed(code) }
        handle.shouldAccept = { [unowned self] in self.hasRoomForAClient() }
        do {
            try handle.adopt(descriptor: duplicate)
        } catch {
            handle.close()  // and with it the duplicate (see `adopt`)
            throw ProxyStartError(message: "worker \(worker): cannot accept on the listening socket: \(error)")
        }
        return handle
    }

    /// Out of descriptors (EMFILE, ENFILE) and libuv's reserve descriptor is gone too — another
    /// thread of this process took the slot it freed. libuv would retry `accept` at once, forever,
    /// inside one callback; instead accepting pauses on every listener (new connections wait in
    /// the kernel's queue) and resumes shortly, as nginx does.
    private func acceptFailed(_ code: Int32) {
        warnAtMostEverySecond("accept failed: \(UVError(code)) — raise the file-descriptor limit or lower limits.max_connections")
        guard code == -EMFILE || code == -ENFILE else { return }
        for l in listeners {
            l.handle?.close()
            l.handle = nil
        }
        acceptResumer.start(timeoutMs: 100)
    }

    private func resumeAccepting() {
        guard !isDraining else { return }
        for l in listeners where l.handle == nil && l.descriptor >= 0 {
            do {
                l.handle = try makeListener(l)
            } catch {
                acceptResumer.start(timeoutMs: 100)  // still no descriptor to spare
                return
            }
        }
    }

    /// Whether a new client fits under `limits.max_connections`. At the limit the connection is
    /// not refused: it is left pending (libuv holds it and stops polling the listening socket, so
    /// later ones wait in the kernel's listen queue, as with HAProxy's `maxconn`) and accepted as
    /// soon as a client closes — at once when it closes on this worker, within `roomWatcher`'s
    /// period when on another. The connections held keep being served meanwhile.
    private func hasRoomForAClient() -> Bool {
        if makeRoomForAClient() { return true }
        stats.add(WorkerStats.connectionsRefused)
        warnAtMostEverySecond("limits.max_connections (\(settings.maxConnections)) reached: new connections wait "
            + "in the listen queue until one closes")
        roomWatcher.start(timeoutMs: 20, repeatMs: 20)
        return false
    }

    /// Whether one more client fits under `limits.max_connections`. Idle pooled connections count
    /// against it (they hold descriptors: `ConnectionCount`) and give way to clients: at the limit
    /// this worker closes its least recently used ones; when those held by other workers are in
    /// the way, it asks them to close theirs (they do on their next sweep) until it finds room.
    private func makeRoomForAClient() -> Bool {
        let limit = settings.maxConnections
        while !connectionCount.hasRoom(limit: limit) {
            guard closeOldestIdleUpstream() else {
                if connectionCount.clientsHaveRoom(limit: limit) { connectionCount.idleConnectionsWanted = true }
                return false
            }
        }
        if connectionCount.idleConnectionsWanted { connectionCount.idleConnectionsWanted = false }
        return true
    }

    /// Closes this worker's least recently pooled idle upstream connection; false when it has none.
    func closeOldestIdleUpstream() -> Bool {
        guard idleTally.count > 0 else { return false }
        var oldest: UpstreamPool?
        for b in settings.backends {
            guard let since = b.pool.oldestIdleSince else { continue }
            if let o = oldest, let s = o.oldestIdleSince, s <= since { continue }
            oldest = b.pool
        }
        guard let oldest else { return false }
        oldest.closeOldest()
        return true
    }

    private var hasPendingAccept: Bool { listeners.contains { $0.handle?.hasPending == true } }

    /// Which listener a freed slot goes to first: rotated, so a flooded listener cannot starve
    /// the others.
    private var nextPendingListener = 0

    private func acceptWaitingIfRoom() {
        guard hasPendingAccept else { return roomWatcher.stop() }
        guard makeRoomForAClient() else { return }
        roomWatcher.stop()
        let count = listeners.count
        nextPendingListener = (nextPendingListener + 1) % max(count, 1)
        for step in 0..<count {
            let l = listeners[(nextPendingListener + step) % count]
            guard let handle = l.handle, handle.hasPending else { continue }
            guard makeRoomForAClient() else { return roomWatcher.start(timeoutMs: 20, repeatMs: 20) }
            handle.acceptPending()
        }
    }

    /// Closes libuv's listeners and the sockets themselves: no more connections on this worker.
    private func stopAccepting() {
        for l in listeners { l.close() }
        listeners = []
        roomWatcher.stop()
        adminListener?.close()
        adminListener = nil
        acceptResumer.stop()
    }

    private func restartPoolSweeper() {
        // At least every second: the sweep also ends passive-health ejections and applies
        // runtime weight changes.
        let sweepMs = UInt64(min(max(settings.config.pool.idleTimeoutMs / 4, 50), 1000))
        poolSweeper.start(timeoutMs: sweepMs, repeatMs: sweepMs)
    }

    /// Switches new exchanges to `generation`. Exchanges in flight finish with the backend and
    /// settings they started with; idle pooled connections to removed backends are closed. A
    /// `listening` descriptor (a listener's address changed; keyed by the listener's index) is
    /// adopted before that listener's old socket closes, so there is no moment without one.
    /// Returns a problem to report, if a new listener could not be opened (the worker then
    /// keeps accepting on that listener's old address).
    public func apply(_ generation: ConfigGeneration, listening descriptors: [Int: Int32] = [:]) -> String? {
        guard generation.number > settings.generation else {
            for d in descriptors.values { _ = close(d) }
            return nil
        }
        let old = settings.backends
        let oldHTTP2 = settings.config.http2
        if generation.config.redis != redis?.config {
            redis?.retire()
            redis = generation.config.redis.map { RedisClient(config: $0, loop: loop) }
        }
        settings = ServerSettings(generation, worker: worker, previous: old, previousRouter: settings.router, redis: redis)
        if settings.router.routes.contains(where: { $0.globalLimiter != nil }) { redis?.warmUp() }
        configureAccessLog()
        adoptPools()
        if settings.config.http2 != oldHTTP2 {
            // HTTP/2 connections announced their limits (SETTINGS, windows) when they opened: a
            // GOAWAY lets their streams finish and the clients reconnect under the new ones.
            // (New streams on kept connections pick up every other change, as HTTP/1 requests do.)
            for case let c as HTTP2ServerConnection in clients.values { c.closeIfIdle() }
        }
        for b in old where !settings.backends.contains(where: { $0 === b }) {
            b.isRetired = true
            b.pool.closeAll()
        }
        restartPoolSweeper()
        var problems: [String] = []
        for (index, descriptor) in descriptors.sorted(by: { $0.key < $1.key }) {
            guard !isDraining, index < listeners.count else {
                _ = close(descriptor)
                continue
            }
            let moved = WorkerListener(index: index, descriptor: descriptor)
            do {
                moved.handle = try makeListener(moved)
                listeners[index].close()
                listeners[index] = moved
            } catch {
                moved.close()
                problems.append("\(error.message); this worker keeps accepting on listen[\(index)]'s old address")
            }
        }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    private func accept(_ stream: TCPStream, on index: Int) {
        // The main listener asked `hasRoomForAClient` first; workers accepting in the same instant
        // may overshoot the limit by one each (`ConnectionBudget.reserve` leaves room for that)
        // rather than close a connection the kernel already handed over.
        let role = index < settings.listeners.count ? settings.listeners[index] : ListenerRole.cleartext
        if role.expectsProxyHeader { return awaitProxyHeader(stream, role: role) }
        if let context = role.tls {
            startHandshake(stream, context: context, role: role)
        } else {
            adopt(stream, admin: false, exchangeStates: exchangeStates, listener: role)
        }
    }

    /// Connections of `proxy_protocol` listeners whose PROXY header has not come yet.
    private var awaitingProxyHeader: [ObjectIdentifier: (stream: TCPStream, timer: Timer)] = [:]

    /// Reads the PROXY protocol header a `proxy_protocol` listener's connections start with
    /// (within `timeouts.client_header_ms`), takes its source as the client's address, and then
    /// goes on as the listener does (TLS, HTTP) with the bytes that followed the header. A
    /// connection without a valid header is closed. Counts against `max_connections` from now on.
    private func awaitProxyHeader(_ stream: TCPStream, role: ListenerRole) {
        connectionCount.add()
        stats.add(WorkerStats.connectionsAccepted)
        let id = ObjectIdentifier(stream)
        let timer = Timer(loop: loop)
        awaitingProxyHeader[id] = (stream, timer)
        var buffer: [UInt8] = []
        func done() {
            awaitingProxyHeader[id] = nil
            timer.close()
            stream.onRead = nil
            stream.onReadEnd = nil
        }
        func refuse(_ why: String) {
            done()
            stats.add(WorkerStats.proxyHeaderRefusals)
            warnAtMostEverySecond("listener: closed a connection from \(stream.peerAddress.map(String.init(describing:)) ?? "an unknown address"): \(why)")
            stream.close()
            connectionCount.release()
            if hasPendingAccept { acceptWaitingIfRoom() }
            if isDraining && activeClients == 0 && handshaking.isEmpty { finishDrain() }
        }
        timer.onFire = { refuse("no PROXY protocol header within timeouts.client_header_ms (\(self.settings.config.timeouts.clientHeaderMs) ms)") }
        stream.onReadEnd = { _ in
            // Closed without a byte: a TCP connect check (a balancer's), not worth a warning.
            if buffer.isEmpty {
                done()
                stream.close()
                self.connectionCount.release()
                if self.hasPendingAccept { self.acceptWaitingIfRoom() }
                return
            }
            refuse("the connection ended before its PROXY protocol header")
        }
        stream.onRead = { [unowned self] bytes in
            buffer.append(contentsOf: bytes)
            switch ProxyProtocol.parse(buffer[...]) {
            case .incomplete:
                return
            case .invalid(let why):
                refuse(why)
            case .header(let length, let source):
                done()
                stream.proxiedSource = source
                stream.replay = Array(buffer[length...])
                if let context = role.tls {
                    self.startHandshake(stream, context: context, role: role, counted: true)
                } else {
                    self.adopt(stream, admin: false, exchangeStates: self.exchangeStates, listener: role, counted: true)
                }
                stream.deliverReplay()
            }
        }
        timer.start(timeoutMs: UInt64(max(settings.config.timeouts.clientHeaderMs, 1)))
        stream.startReading()
    }

    private func closeAwaitingProxyHeader() {
        for (stream, timer) in awaitingProxyHeader.values {
            timer.close()
            stream.close()
            connectionCount.release()
        }
        awaitingProxyHeader = [:]
    }

    /// Connections whose TLS handshake is under way; adopted by an HTTP connection once it is done.
    private var handshaking: [ObjectIdentifier: TLSStream] = [:]

    /// Wraps an accepted connection in TLS; it counts against `max_connections` from now on, and
    /// becomes an HTTP connection only once the handshake is done (so the protocol ALPN chose can
    /// pick the connection type, and a stalled handshake never holds request state).
    /// `counted`: the connection already counts against `max_connections` (a PROXY header came first).
    private func startHandshake(_ stream: TCPStream, context: TLSContext, role: ListenerRole, counted: Bool = false) {
        let tls: TLSStream
        do {
            tls = try TLSStream(transport: stream, context: context, handshakeTimeoutMs: role.handshakeTimeoutMs)
        } catch {
            stream.close()
            if counted { connectionCount.release() }
            return
        }
        if !counted {
            connectionCount.add()
            stats.add(WorkerStats.connectionsAccepted)
        }
        let id = ObjectIdentifier(tls)
        handshaking[id] = tls
        tls.onHandshake = { [unowned self, unowned tls] outcome in
            self.handshaking[id] = nil
            self.recordHandshake(tls, outcome)
            switch outcome {
            case .done, .plaintextHTTP:
                self.adopt(tls, admin: false, exchangeStates: self.exchangeStates, listener: role,
                           tls: outcome == .done ? self.sessionFacts(tls) : nil, counted: true,
                           http2: outcome == .done && tls.negotiatedProtocol == Self.h2)
            case .failed:
                tls.close()
                self.connectionCount.release()
                if self.hasPendingAccept { self.acceptWaitingIfRoom() }
                if self.isDraining && self.activeClients == 0 && self.handshaking.isEmpty { self.finishDrain() }
            }
        }
    }

    /// The access log's TLS fields, shared by every connection that settled the same version,
    /// cipher and SNI (nearly all of them): nothing per connection. Bounded: a flood of distinct
    /// SNI names starts the table over.
    private var sessionFactsTable: [String: TLSSessionFacts] = [:]

    private func sessionFacts(_ tls: TLSStream) -> TLSSessionFacts {
        let version = tls.version, cipher = tls.cipher, name = tls.serverName
        let key = version + "\u{0}" + cipher + "\u{0}" + (name ?? "")
        if let known = sessionFactsTable[key] { return known }
        if sessionFactsTable.count >= 256 { sessionFactsTable.removeAll(keepingCapacity: true) }
        let facts = TLSSessionFacts(version: version, cipher: cipher, serverName: name)
        sessionFactsTable[key] = facts
        return facts
    }

    private func recordHandshake(_ tls: TLSStream, _ outcome: TLSHandshakeOutcome) {
        switch outcome {
        case .done:
            stats.add(WorkerStats.tlsHandshakes + WorkerStats.TLSResult.ok.rawValue)
            let version = tls.version
            stats.add(WorkerStats.tlsVersions + (version == "TLSv1.3" ? 1 : version == "TLSv1.2" ? 0 : 2))
            stats.add(WorkerStats.tlsResumed + (tls.isResumed ? 1 : 0))
            let micros = (loop.now &- tls.startedAtMs) &* 1000
            stats.add(WorkerStats.tlsHandshakeDuration + RequestStats.bucket(micros: micros))
            stats.add(WorkerStats.tlsHandshakeDurationSum, micros)
        case .plaintextHTTP:
            stats.add(WorkerStats.tlsHandshakes + WorkerStats.TLSResult.plaintextHTTP.rawValue)
        case .failed(let failure):
            let result: WorkerStats.TLSResult = switch failure.kind {
            case .protocolError: .failed
            case .timeout: .timeout
            case .peerClosed: .closed
            }
            stats.add(WorkerStats.tlsHandshakes + result.rawValue)
        }
    }

    /// Serves a client on `stream` (accepted here, or made up by a test) from now on. Generic over
    /// the transport: the proxy calls it with `TCPStream`, the tests with `MemoryStream`.
    /// `listener` is what the client connected to; `tls` what its handshake settled. `counted`:
    /// the connection was counted against `max_connections` already (at its TLS accept).
    func adopt<Client: ByteStream>(_ stream: Client, admin: Bool, exchangeStates: ExchangeStatePool,
                                   listener: ListenerRole = .cleartext, tls: TLSSessionFacts? = nil, counted: Bool = false,
                                   http2: Bool = false) {
        if !admin && !counted {
            connectionCount.add()
            stats.add(WorkerStats.connectionsAccepted)
        } else if admin {
            stats.add(WorkerStats.connectionsAccepted)
        }
        if http2 {  // ALPN chose h2 in the TLS handshake
            let connection = HTTP2ServerConnection(server: self, client: stream, isAdminListener: admin, listener: listener, tls: tls)
            clientOpened(connection)
            connection.start()
        } else {
            let connection = HTTP1ServerConnection(server: self, client: stream, isAdminListener: admin, listener: listener, tls: tls,
                                                   exchangeStates: exchangeStates)
            clientOpened(connection)
            connection.start()
        }
    }

    /// A client connection (of either protocol) joins the table and the count.
    private func clientOpened(_ connection: any DownstreamConnectionControl) {
        activeClients += 1
        stats.set(WorkerStats.clientsOpen, UInt64(activeClients))
        clients[ObjectIdentifier(connection)] = connection
    }

    func warnAtMostEverySecond(_ message: String) {
        let now = loop.now
        guard lastAcceptWarning == 0 || now &- lastAcceptWarning >= 1000 else { return }
        lastAcceptWarning = now
        Log.warning(message)
    }

    func clientClosed<Client>(_ connection: HTTP1ServerConnection<Client>) {
        clientClosed(connection, isAdminListener: connection.isAdminListener)
    }

    /// A client connection (of either protocol) closed: it leaves the table and the count.
    func clientClosed(_ connection: any DownstreamConnectionControl, isAdminListener: Bool) {
        activeClients -= 1
        stats.set(WorkerStats.clientsOpen, UInt64(activeClients))
        if !isAdminListener { connectionCount.release() }
        clients[ObjectIdentifier(connection)] = nil
        if hasPendingAccept { acceptWaitingIfRoom() }
        if isDraining && activeClients == 0 && handshaking.isEmpty { finishDrain() }
    }

    /// An HTTP/1 connection recognised the h2c preface (prior knowledge): the client stream goes
    /// over to an HTTP/2 connection, with the bytes read so far. The HTTP/1 connection has let go
    /// of the stream (its callbacks are replaced here) and of its table entry.
    func switchToHTTP2<Client: ByteStream>(from old: HTTP1ServerConnection<Client>, client: Client, listener: ListenerRole,
                                           isAdminListener: Bool, initial: UnsafeRawBufferPointer) {
        clients[ObjectIdentifier(old)] = nil
        let connection = HTTP2ServerConnection(server: self, client: client, isAdminListener: isAdminListener, listener: listener, tls: nil)
        clients[ObjectIdentifier(connection)] = connection
        connection.start(initial: initial)
    }

    // MARK: HTTP/2 output batching

    /// HTTP/2 connections with frames to write: flushed together once per loop iteration, so
    /// what all their streams produced in one iteration leaves in one write per connection.
    private var http2Flushes: [HTTP2ServerConnection] = []
    /// Made on first use (a proxy without HTTP/2 clients has none); closed by `shutdown`.
    private var http2FlushHook: LoopIdle?

    /// The ALPN name of HTTP/2 over TLS.
    private static let h2: [UInt8] = Array("h2".utf8)

    func scheduleHTTP2Flush(_ connection: HTTP2ServerConnection) {
        http2Flushes.append(connection)
        if http2FlushHook == nil {
            let hook = LoopIdle(loop: loop)
            hook.onFire = { [unowned self] in self.runHTTP2Flushes() }
            http2FlushHook = hook
        }
        http2FlushHook!.start()
    }

    private func runHTTP2Flushes() {
        var due: [HTTP2ServerConnection] = []
        swap(&due, &http2Flushes)
        for connection in due { connection.flushNow() }
        if http2Flushes.isEmpty {
            http2FlushHook?.stop()
            due.removeAll(keepingCapacity: true)
            swap(&due, &http2Flushes)  // keep the capacity
        }
    }

    /// Where an HTTP/2 connection gathers its frames for one write (`HTTP2ServerConnection.writeOutput`).
    let http2Output = HTTP2OutputBuffer()

    private var openHTTP2Connections = 0
    func http2ConnectionOpened() {
        openHTTP2Connections += 1
        stats.set(WorkerStats.http2ConnectionsOpen, UInt64(openHTTP2Connections))
    }
    func http2ConnectionClosed() {
        openHTTP2Connections -= 1
        stats.set(WorkerStats.http2ConnectionsOpen, UInt64(openHTTP2Connections))
    }

    private var http2AbuseWarning = RateLimitedWarning()

    /// Logs a connection ended for abuse, at most once every 10 s per worker (with a count of the rest).
    func warnAboutHTTP2Abuse(_ message: String) {
        http2AbuseWarning.log(now: loop.now) { n in
            message + (n > 0 ? " (and \(n) more such connections since the last line)" : "")
        }
    }

    private var openTunnels = 0
    /// The "TLS on a cleartext listener" warning.
    private var tlsOnCleartextWarning = RateLimitedWarning()

    /// Logs that a client sent a TLS handshake to this cleartext listener — at most once every 10 s
    /// per worker (with a count of the rest), so a scanner cannot flood standard error.
    func noteTLSOnCleartextListener(from peer: [UInt8]) {
        tlsOnCleartextWarning.log(now: loop.now) { n in
            let more = n > 0 ? " (and \(n) more since the last such line)" : ""
            return "a TLS handshake from \(String(decoding: peer, as: UTF8.self)) arrived on a cleartext listener: answered 400 and closed\(more); clients must use http:// here"
        }
    }

    func tunnelOpened() {
        openTunnels += 1
        stats.set(WorkerStats.tunnelsOpen, UInt64(openTunnels))
    }
    func tunnelClosed() {
        openTunnels -= 1
        stats.set(WorkerStats.tunnelsOpen, UInt64(openTunnels))
    }

    /// The proxy's own answer for `request` if it is for one of the admin endpoints (or comes
    /// through the admin listener); nil to proxy it.
    ///
    /// On the main listener `/_health` is for everyone; metrics and the status page are for
    /// loopback clients only — or, with `admin.listen` set, not there at all (those paths then
    /// belong to the backends). On the admin listener everything else is a 404.
    /// `request` is `inout` only to pass the connection's stored head by address; not modified.
    ///
    /// The inspector's endpoints also refuse, on the main listener, a `Host` that is not
    /// `localhost` (or a subdomain of it) or an IP literal: a page on a rebinding domain must not
    /// read the recordings. Its actions (`POST`) need an `X-Inspect-Action` field, which no
    /// cross-site form or simple request can send, and are refused to a replay
    /// (`inspectorReplay`: a recorded call of the inspector replayed would replay itself).
    func answerLocally(_ request: inout RequestHead, adminListener: Bool, loopbackPeer: Bool, inspectorReplay: Bool = false) -> LocalReply? {
        let paths = settings.adminPaths
        let endpoint = paths.match(request)
        if endpoint == nil && !adminListener { return nil }
        guard let endpoint else {
            return .text(404, "Not Found: this is the proxy's admin listener; "
                + "it serves \(settings.config.admin.namedPaths.map(\.path).joined(separator: ", "))")
        }
        if case .health = endpoint {} else if !adminListener {
            if paths.hasOwnListener { return nil }
            guard loopbackPeer else {
                return .text(403, "Forbidden: the proxy's metrics and status are served to "
                    + "loopback clients only; set admin.listen to serve them on an address of their own")
            }
        }
        switch endpoint {
        case .health:
            let (status, body) = HealthEndpoint.render(settings.upstreams, worker: worker, workers: workerCount)
            return LocalReply(status: status, contentType: "application/json", body: body)
        case .metrics:
            return LocalReply(status: 200, contentType: MetricsEndpoint.contentType,
                              body: MetricsEndpoint.render(settings, metrics: metrics, workers: workerCount))
        case .statusJSON:
            return LocalReply(status: 200, contentType: "application/json",
                              body: StatusEndpoint.json(settings, metrics: metrics, workers: workerCount))
        case .status:
            return LocalReply(status: 200, contentType: "text/html; charset=utf-8", body: settings.statusPage)
        case .api(let rest):
            return RuntimeAPI.answer(rest, method: request.methodString, upstreams: settings.upstreams)
        case .inspectPage, .inspectAPI:
            if !adminListener, let refusal = Self.inspectorHostRefusal(request) { return refusal }
            guard case .inspectAPI(let rest, let isPOST) = endpoint else {
                return LocalReply(status: 200, contentType: "text/html; charset=utf-8", body: settings.inspectorPage)
            }
            if isPOST {
                if inspectorReplay { return .text(409, "Conflict: a replay does not call the inspector") }
                guard request.fieldIndex("x-inspect-action") != nil else {
                    return .text(403, "Forbidden: the inspector's actions need an X-Inspect-Action field (its page sends one)")
                }
                if let refusal = Self.inspectorCrossOriginRefusal(request) { return refusal }
            }
            return inspectorAnswer(rest, isPOST: isPOST)
        case .inspectAPIOtherMethod:
            return .text(405, "Method Not Allowed: the inspector's API takes GET, HEAD and POST from its own page "
                + "(no cross-origin requests)", fields: [("Allow", "GET, HEAD, POST")])
        }
    }

    // MARK: - The request inspector

    /// A 403 unless the request's `Host` names this machine: `localhost`, `*.localhost` or an IP
    /// literal (with or without a port).
    static func inspectorHostRefusal(_ request: RequestHead) -> LocalReply? {
        guard let i = request.hostField else { return nil }
        var host = request.bytes.string(request.fields[i].value).lowercased()
        if host.hasPrefix("[") { return nil }  // an IPv6 literal
        if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        if host.hasSuffix(".") { host.removeLast() }
        if host == "localhost" || host.hasSuffix(".localhost") || host.allSatisfy({ $0 == "." || $0.isNumber }) { return nil }
        return .text(403, "Forbidden: the request inspector answers only for localhost or an IP address, not \"\(host)\" "
            + "(so that no other site can read it through a name that points here)")
    }

    /// A 403 for an inspector action a page of another origin sent: `Sec-Fetch-Site` other than
    /// `same-origin` or `none`, or an `Origin` that is not this request's own (`http://` or
    /// `https://` and its `Host`). Clients that send neither (curl) are let through.
    static func inspectorCrossOriginRefusal(_ request: RequestHead) -> LocalReply? {
        let b = request.bytes
        if let i = request.fieldIndex("sec-fetch-site") {
            let site = b.string(request.fields[i].value).lowercased()
            if site != "same-origin" && site != "none" {
                return .text(403, "Forbidden: the inspector's actions are taken only from its own page (Sec-Fetch-Site: \(site))")
            }
        }
        if let i = request.fieldIndex("origin") {
            let origin = b.string(request.fields[i].value).lowercased()
            let host = request.hostField.map { b.string(request.fields[$0].value).lowercased() } ?? ""
            if host.isEmpty || (origin != "http://" + host && origin != "https://" + host) {
                return .text(403, "Forbidden: the inspector's actions are taken only from its own page (Origin \(origin) is not this one)")
            }
        }
        return nil
    }

    /// Replays under way (`POST …/api/replay/SEQ`), kept until each ends.
    private var replays: [ObjectIdentifier: DocumentFetch] = [:]
    static let maxReplays = 16

    /// The inspector's JSON: `GET requests[?after=SEQ]`, `GET requests/SEQ`, `POST replay/SEQ`,
    /// `POST clear` (`rest`: the target after `inspect_path/api/`).
    private func inspectorAnswer(_ rest: String, isPOST: Bool) -> LocalReply {
        let store = metrics.inspector
        let config = settings.config.inspect
        func json(_ status: UInt16, _ body: [UInt8]) -> LocalReply { LocalReply(status: status, contentType: "application/json", body: body) }
        func problem(_ status: UInt16, _ text: String) -> LocalReply { json(status, Array("{\"error\": \(JSONText.quote(text))}".utf8)) }
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? ""
        if !isPOST {
            if path == "requests" {
                let after = parts.count > 1 ? parts[1].split(separator: "&").first { $0.hasPrefix("after=") }.flatMap { UInt64($0.dropFirst(6)) } : nil
                return json(200, InspectorAPI.list(store, config: config, after: after))
            }
            if path.hasPrefix("requests/"), let seq = UInt64(path.dropFirst(9)) {
                guard let entry = store.find(seq) else { return problem(404, "request \(seq) is not recorded (or no longer: the oldest go first)") }
                return json(200, InspectorAPI.detail(entry, config: config))
            }
            return problem(404, "no such inspector resource; GET requests, requests/SEQ; POST replay/SEQ, clear")
        }
        if path == "clear" {
            store.clear()
            return json(200, Array("{\"cleared\": true}".utf8))
        }
        guard path.hasPrefix("replay/"), let seq = UInt64(path.dropFirst(7)) else {
            return problem(404, "no such inspector action; POST replay/SEQ or clear")
        }
        guard let entry = store.find(seq) else { return problem(404, "request \(seq) is not recorded (or no longer)") }
        guard case .done(let recorded) = entry else { return problem(409, "request \(seq) is still in flight") }
        if let why = InspectorReplay.refusal(recorded) { return problem(409, "request \(seq) cannot be replayed: \(why)") }
        guard replays.count < Self.maxReplays else { return problem(503, "\(Self.maxReplays) replays are under way on this worker; try again when they end") }
        guard let (address, secure) = replayAddress() else {
            return problem(409, "replay sends the request to one of the proxy's own listeners, and this proxy has none that takes it (only redirecting or PROXY-protocol listeners)")
        }
        var tls: TLSContext? = nil
        if secure {
            // The proxy's own certificate: nothing to verify (the connection never leaves the machine).
            do { tls = try replayTLS ?? TLSContext(clientCAFile: nil, verify: false, alpn: ["http/1.1"]) } catch {
                return problem(503, "cannot make a TLS client for the replay: \(error)")
            }
            replayTLS = tls
        }
        // The answer is read and dropped (the recorder keeps what it shows); a long poll or a
        // stream may take its time, up to ten minutes.
        let fetch = DocumentFetch(loop: loop, DocumentFetch.Request(host: address.ipString, port: address.port, target: recorded.target, tls: tls,
                                                                     timeoutMs: 600_000, maxBytes: Int.max,
                                                                     raw: InspectorReplay.request(recorded, field: store.replayField(seq)),
                                                                     rawIsHEAD: recorded.method == "HEAD"))
        let id = ObjectIdentifier(fetch)
        replays[id] = fetch
        fetch.start { [weak self] _ in self?.replays[id] = nil }
        return json(202, Array("{\"replay_of\": \(seq), \"started\": true}".utf8))
    }

    /// The TLS client context replays to a TLS listener use (made on first use).
    private var replayTLS: TLSContext?

    /// A listener's address to send replays to (a wildcard bind as loopback), cleartext ones
    /// first; `secure`: it speaks TLS.
    private func replayAddress() -> (SocketAddress, secure: Bool)? {
        var found: (SocketAddress, secure: Bool)? = nil
        for l in listeners where l.index < settings.listeners.count {
            let role = settings.listeners[l.index]
            guard role.redirectPort == nil, !role.expectsProxyHeader, let bound = l.handle?.localAddress else { continue }
            let address: SocketAddress? = switch bound.ipString {
            case "0.0.0.0": SocketAddress(ip: "127.0.0.1", port: bound.port)
            case "::": SocketAddress(ip: "::1", port: bound.port)
            default: bound
            }
            guard let address else { continue }
            if role.tls == nil { return (address, false) }
            if found == nil { found = (address, true) }
        }
        return found
    }

    /// Graceful shutdown: stops accepting at once, closes idle keep-alive connections, lets every
    /// exchange in flight finish (its response says `Connection: close`), then calls `drained`.
    public func beginDrain(_ drained: @escaping () -> Void) {
        guard !isDraining else { return }
        isDraining = true
        onDrained = drained
        stopAccepting()
        for c in Array(clients.values) { c.closeIfIdle() }
        closeHandshaking()
        if activeClients == 0 { finishDrain() }
    }

    /// Handshakes under way are dropped at shutdown: no request has started on them.
    private func closeHandshaking() {
        for tls in handshaking.values {
            tls.close()
            connectionCount.release()
        }
        handshaking = [:]
        closeAwaitingProxyHeader()
    }

    private func finishDrain() {
        guard let drained = onDrained else { return }
        onDrained = nil
        drained()
    }

    /// At most this many exchanges of a worker wait for keys at once; more are refused (503), so
    /// a flood of tokens with unknown `kid`s during a slow fetch costs bounded memory.
    static let maxKeyWaiters = 4096

    /// `resume` runs after the next JWKS fetch of any key set has ended (`keysFetched`). False:
    /// too many wait already, and `resume` will not run.
    func waitForKeys(_ resume: @escaping () -> Void) -> Bool {
        guard keyWaiters.count < Self.maxKeyWaiters else { return false }
        keyWaiters.append(resume)
        return true
    }

    /// A JWKS fetch ended (the supervisor says so; `WorkerMessage.keysFetched`): the exchanges
    /// that waited for keys ask again.
    public func keysFetched() {
        let waiting = keyWaiters
        keyWaiters.removeAll()
        for resume in waiting { resume() }
    }

    /// Closes every client connection at once (the memory worker between fuzz inputs).
    func closeAllConnections() {
        for c in Array(clients.values) { c.forceClose() }
    }

    /// Stops accepting and closes every connection and timer at once; `loop.run()` then returns
    /// (once the owner closes its own handles too).
    public func shutdown() {
        isDraining = true
        onDrained = nil
        stopAccepting()
        acceptResumer.close()
        roomWatcher.close()
        poolSweeper.close()
        for replay in replays.values { replay.cancel() }
        replays = [:]
        for c in Array(clients.values) { c.forceClose() }
        http2FlushHook?.close()
        http2FlushHook = nil
        http2Flushes.removeAll()
        closeHandshaking()
        accessLog?.close()
        accessLog = nil
        redis?.close()
        keyWaiters.removeAll()
        for b in settings.backends { b.pool.closeAll() }
    }
}

/// One listening address on one worker: the socket from `ListenSockets` (owned here) and libuv's
/// handle on a duplicate of it, so accepting can pause (closing the handle) and resume without
/// losing the socket. Threading: the worker's loop.
private final class WorkerListener {
    /// Its place in `config.listeners`: which `ListenerRole` its connections get.
    let index: Int
    var descriptor: Int32
    var handle: TCPListener?

    init(index: Int, descriptor: Int32) {
        self.index = index
        self.descriptor = descriptor
    }

    func close() {
        handle?.close()
        handle = nil
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
        descriptor = -1
    }
}

public struct ProxyStartError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// A worker's scratch buffer for HTTP/2 output: filled and written within one flush, so every
/// connection of the worker can use the same one. Threading: its worker's loop only.
final class HTTP2OutputBuffer {
    var bytes = ByteBuffer(capacity: 64 * 1024)
}
