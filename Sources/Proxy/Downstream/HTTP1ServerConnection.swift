/// What the server asks of its client connections at shutdown, whatever their transport.
protocol DownstreamConnectionControl: AnyObject {
    /// Graceful shutdown: close now if waiting for a request, else after the exchange under way.
    func closeIfIdle()
    /// Immediate shutdown.
    func forceClose()
}

/// One client connection and the exchanges it carries, one at a time, in order.
///
/// Life cycle of an exchange: read a request head → answer locally (`/_health`, errors) or pick a
/// backend and get an upstream connection (pooled or new) → write the rewritten head and stream
/// the request body through a `Pipe` → read the response head, rewrite it, stream its body back
/// through the other `Pipe` → return the upstream to its pool and wait for the next request
/// (pipelined bytes already buffered are processed at once).
///
/// Lifetime: the client stream's callbacks hold the connection; they are dropped when the stream
/// closes. Threading: loop thread only.
final class HTTP1ServerConnection<Client: ByteStream>: UpstreamConnectionDelegate, DownstreamConnectionControl {
    /// The server that accepted the connection. A strong `let`: the compiler knows it alive for as
    /// long as the connection, so calls through it (and through its own `let`s: `loop`, the pools)
    /// need no retain. `unowned(unsafe)` cost a retain/release pair per call — about 20 per
    /// request, ~40 instructions each — and `unowned` a runtime check per access. The cycle is
    /// broken when the server drops the connection (`clientClosed`).
    let server: ProxyServer
    /// The configuration the current exchange runs with (see `ServerSettings`): taken from the
    /// server when a new request head begins, so a reload never changes it mid-exchange.
    private var settings: ServerSettings
    /// The client's byte stream: a `TCPStream` in the proxy, a `MemoryStream` in the tests.
    let client: Client
    /// Where this connection takes its exchange state from (its worker's pool).
    private let exchangeStates: ExchangeStatePool<Client>
    private let timer: Timer
    /// The peer's IP as text, for `X-Forwarded-For` and `X-Real-IP`.
    private let peerIP: [UInt8]
    /// `peerIP` is an IPv6 address (quoted in `Forwarded`): found once, not per request.
    private let peerIsIPv6: Bool
    /// The connection came through `admin.listen`.
    let isAdminListener: Bool
    /// The peer is this machine (127.0.0.0/8, ::1): it may read metrics and the status page.
    let isLoopbackPeer: Bool

    private enum Phase {
        /// Waiting for (the rest of) a request head.
        case head
        /// A request is being handled: see `exchange`.
        case exchange
        /// A protocol switch (101) joined the two connections: see `tunnel`.
        case tunnel
        /// Closing: the response is out (or an error was sent); input is discarded.
        case closing
        case closed
    }
    private var phase = Phase.head

    /// The exchange under way, or requests waiting in `pending`: taken from the worker's pool when
    /// a request's first byte arrives, given back once the connection is idle with nothing
    /// buffered (`recycleExchangeStateIfIdle`) and at teardown. Held only in phase `.head` with
    /// something buffered, and in the phases after it: an idle keep-alive connection holds no
    /// request or response buffers. the pool's `detached` while not held (`hasState`).
    private var x: UnsafeMutablePointer<ExchangeState<Client>>
    private var hasState = false

    // Request side.

    // Upstream side.
    private var tunnel: Tunnel<Client>?

    /// The request may go again on another connection: nothing in it can have taken effect twice.

    // Response side.
    private var clientSentEOF = false
    /// Our FIN went out after all queued output (see `closeGracefully`).
    private var shutdownDone = false
    private var lastClientActivity: UInt64 = 0
    /// Counts finished exchanges, so a callback can tell that its exchange ended under it.
    private var exchangesFinished = 0


    // Accounting: metrics and the access log (see `recordExchange`).
    private var bytesSentCounted: UInt64 = 0
    private var bytesReceivedCounted: UInt64 = 0

    private enum TimerPurpose {
        case none, clientHeader, idle, connect
        /// Request/response in flight: client body pauses and upstream silence.
        case upstream
        /// Closing: queued output must drain within `idle_ms`.
        case flush
        /// Closing: output is out and FIN sent; wait briefly for the client's FIN.
        case linger
    }
    private var timerPurpose = TimerPurpose.none
    /// When `timerPurpose` is due (loop milliseconds).
    private var deadline: UInt64 = 0
    /// When the libuv timer is due (never later than `deadline`); 0 while it is not running.
    private var timerDue: UInt64 = 0

    /// Most pipelined input buffered before the client's reading is paused.
    private static var pendingLimit: Int { 64 * 1024 }

    init(server: ProxyServer, client: Client, isAdminListener: Bool, exchangeStates: ExchangeStatePool<Client>) {
        self.server = server
        self.exchangeStates = exchangeStates
        self.client = client
        self.isAdminListener = isAdminListener
        settings = server.settings
        x = exchangeStates.detached
        timer = Timer(loop: server.loop)
        let ip = client.peerAddress?.ipString ?? "unknown"
        peerIP = Array(ip.utf8)
        peerIsIPv6 = ip.utf8.contains(UInt8(ascii: ":"))
        isLoopbackPeer = AdminPaths.isLoopback(ip)
    }

    func start() {
        client.setNoDelay()
        client.onRead = { [self] bytes in clientRead(bytes) }
        client.onReadEnd = { [self] code in clientEnded(code) }
        client.onWriteError = { [self] _ in abort() }
        client.onDrain = { [self] in
            if let tunnel { return tunnel.clientDrained() }
            if hasState { x.pointee.responsePipe?.sinkDrained() }
            if phase == .head { clientOutputDrained() }
        }
        timer.onFire = { [self] in timerFired() }
        arm(.clientHeader, ms: settings.config.timeouts.clientHeaderMs)
        client.startReading()
    }

    // MARK: - Client input

    private func clientRead(_ bytes: UnsafeRawBufferPointer) {
        lastClientActivity = server.loop.now
        switch phase {
        case .head, .exchange:
            handleClientBytes(bytes)
        case .tunnel:
            tunnel?.clientRead(bytes)
        case .closing, .closed:
            break  // lingering close: discard
        }
    }

    /// Processes client bytes, then any buffered pipelined requests that became processable.
    /// Nested calls (from inside an exchange that completes synchronously) leave the draining
    /// of `pending` to the outermost one, so pipelined requests never recurse deeper.
    private func handleClientBytes(_ bytes: UnsafeRawBufferPointer) {
        let nested = inInputLoop
        inInputLoop = true
        if phase == .head && hasPending && !bytes.isEmpty {
            // Requests held back (the client's answers were congested) go first: order is kept.
            x.pointee.pending.append(raw: bytes)
        } else {
            process(bytes)
        }
        guard !nested else { return }
        // A congested client is handled in `process`: the loop stops until `clientOutputDrained`.
        while phase == .head && hasPending && !client.isCongested {
            var buffered = takePending()
            buffered.withUnsafeBytes { process($0) }
            givePendingStorageBack(&buffered)
        }
        inInputLoop = false
        // Held back for congested output: read no more until it drains (`clientOutputDrained`).
        if phase == .head && hasPending && client.isCongested { client.pauseReading(.outputQueued) }
        if !hasState || x.pointee.pending.count <= Self.pendingLimit { client.resumeReading(.pipelined) }
        if phase == .head && clientSentEOF && !hasPending { closeGracefully() }  // half-closed, all answered
        recycleExchangeStateIfIdle()
    }

    /// Moves the buffered input out to be processed (what processing leaves over is appended to
    /// `pending` again). A move, not a copy: copying then emptying `pending` in place made the
    /// emptying allocate a new buffer, since the copy still shared the old one.
    private func takePending() -> [UInt8] {
        var buffered: [UInt8] = []
        swap(&buffered, &x.pointee.pending)
        return buffered
    }

    /// Hands the storage of processed input back to `pending` when it is still empty, so the
    /// next burst reuses it instead of allocating.
    private func givePendingStorageBack(_ buffered: inout [UInt8]) {
        guard hasState, x.pointee.pending.isEmpty, x.pointee.pending.capacity < buffered.capacity else { return }
        buffered.removeAll(keepingCapacity: true)
        swap(&buffered, &x.pointee.pending)
    }

    /// Requests are buffered, unprocessed (pipelined, or held back for congested output).
    private var hasPending: Bool { hasState && !x.pointee.pending.isEmpty }

    /// Gives the exchange state back to the worker's pool when nothing needs it: between requests,
    /// with no request bytes buffered or begun. Not inside the input loop (it still uses it).
    private func recycleExchangeStateIfIdle() {
        // Not while leading empty lines are being counted (their limit spans reads).
        guard hasState, phase == .head, !inInputLoop, x.pointee.pending.isEmpty, x.pointee.requestHeadBytes.isPristine else { return }
        recycleExchangeState(idle: true)
    }

    private func takeExchangeState() {
        x = exchangeStates.take(headLimits: settings.headLimits)
        hasState = true
    }

    private func recycleExchangeState(idle: Bool) {
        guard hasState else { return }
        let pool = exchangeStates
        pool.recycle(x, idle: idle)
        x = pool.detached
        hasState = false
    }

    /// The client read enough of its answers: requests held back by `process` may start.
    private func clientOutputDrained() {
        client.resumeReading(.outputQueued)
        if !inInputLoop && (hasPending || clientSentEOF) {
            handleClientBytes(UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    private var inInputLoop = false

    /// Processes client bytes according to where the current request is.
    private func process(_ bytes: UnsafeRawBufferPointer) {
        var input = bytes
        while !input.isEmpty {
            switch phase {
            case .head:
                if !hasState { takeExchangeState() }
                if x.pointee.requestHeadBytes.bytes.isEmpty {
                    if client.isCongested {
                        // Answers pile up unread (a pipelining client that never reads): the next
                        // request waits, unread, until they drain — whatever the client does, a
                        // connection holds at most the high-water mark of output, one response
                        // and one read of input (swift-nio's HTTPServerPipelineHandler does the same).
                        x.pointee.pending.append(raw: input)
                        client.pauseReading(.outputQueued)
                        return
                    }
                    if settings !== server.settings {
                        // A reload happened: this request is the first to use the new settings.
                        settings = server.settings
                        x.pointee.requestHeadBytes.limits = settings.headLimits
                    }
                    if timerPurpose == .idle { arm(.clientHeader, ms: settings.config.timeouts.clientHeaderMs) }
                    // The request's clock starts at its first byte (nginx's $request_time too).
                    x.pointee.requestStartNs = Platform.monotonicNanos()
                    x.pointee.bytesSentAtStart = client.bytesWritten
                    if input[0] == 0x16 {
                        // A TLS record (handshake) where a request line should start: the client
                        // speaks https:// to a cleartext port. Say so now rather than waiting
                        // out client_header_ms for a line end that never comes.
                        server.noteTLSOnCleartextListener(from: peerIP)
                        return rejectRequest(HTTPParseError(status: 400, reason: "a TLS handshake arrived on a cleartext (http://) listener"))
                    }
                }
                let consumed: Int
                do { consumed = try x.pointee.requestHeadBytes.append(input) } catch {
                    return rejectRequest(error)
                }
                input = UnsafeRawBufferPointer(rebasing: input[consumed...])
                guard x.pointee.requestHeadBytes.isComplete else { return }
                // Swap buffers with the previous request: no allocation per request in steady state.
                x.pointee.requestHeadBytes.moveBytes(into: &x.pointee.request.bytes)
                do { try HeadParser.parseRequest(into: &x.pointee.request, limits: settings.headLimits) } catch {
                    return rejectRequest(error)
                }
                beginExchange(bodyStart: &input)
            case .exchange:
                if !x.pointee.machine.requestComplete && x.pointee.upstreamReady {
                    let consumed = relayRequestBody(input)
                    input = UnsafeRawBufferPointer(rebasing: input[consumed...])
                    if phase != .exchange { return }
                } else {
                    // Body bytes before the upstream is ready, or the next pipelined requests.
                    x.pointee.pending.append(raw: input)
                    if x.pointee.pending.count > Self.pendingLimit { client.pauseReading(.pipelined) }
                    return
                }
            case .tunnel, .closing, .closed:
                return
            }
        }
    }

    private func clientEnded(_ code: Int32) {
        clientSentEOF = true
        if phase == .tunnel { tunnel?.clientEnded(code); return }
        guard code == UVError.eof else {
            // A reset: nobody is left to answer. Never the backend's fault, nothing is counted.
            return abort()
        }
        switch phase {
        case .head:
            // Between requests: let queued output drain, then close — once requests held back
            // for congested output are answered (`handleClientBytes` closes then).
            if !hasPending { closeGracefully() }
        case .exchange:
            // A half-close still wants its answers (and those of requests pipelined before it);
            // `finishExchange` closes once nothing is left. Only a body that can no longer
            // complete ends the exchange now (all received bytes were relayed already).
            if x.pointee.upstreamReady && !x.pointee.machine.requestComplete { abort() }
        case .closing:
            if shutdownDone { teardown() }
        case .tunnel, .closed:
            break  // a tunnel's ends are handled above
        }
    }

    // MARK: - Starting an exchange

    /// A complete request head was parsed; `bodyStart` holds the bytes that followed it in this
    /// read (consumed here: they are copied into `pending` when they cannot go out at once).
    private func beginExchange(bodyStart input: inout UnsafeRawBufferPointer) {
        phase = .exchange
        disarm()
        beginAccounting(parsed: true)
        let framing = x.pointee.request.framing
        x.pointee.machine.begin(framing: framing, isIdempotent: x.pointee.request.isIdempotent,
                                wantsUpgrade: x.pointee.request.connectionUpgrade && !server.isDraining
                                    && x.pointee.rewriter.isTunnelableUpgrade(x.pointee.request))
        switch framing {
        case .contentLength(let n): x.pointee.requestBodyRemaining = n
        case .chunked: x.pointee.requestDecoder.reset()
        case .none, .untilClose: break
        }
        x.pointee.requestBodyBytes = 0
        if let i = x.pointee.request.requestIDField, RequestIDGenerator.isWellFormed(x.pointee.request.bytes, x.pointee.request.fields[i].value) {
            x.pointee.requestID.removeAll(keepingCapacity: true)
            x.pointee.requestID.append(x.pointee.request.bytes, x.pointee.request.fields[i].value)
        } else {
            server.requestIDs.next(into: &x.pointee.requestID)
        }
        if x.pointee.request.hasVia && ProxyIdentity.requestHasLooped(x.pointee.request) {
            return failExchange(status: 508, reason: "Loop Detected: this request already passed through this proxy (its Via names it): a backend points back at the proxy's own listener")
        }
        guard admit() else { return }

        // Answered by the proxy itself? A body sent with such a request is not read: close then.
        let localKeepAlive = x.pointee.machine.keepAliveAfterLocalAnswer(clientKeepAlive: x.pointee.request.keepAlive,
                                                                         draining: server.isDraining)
        if let reply = server.answerLocally(&x.pointee.request, adminListener: isAdminListener, loopbackPeer: isLoopbackPeer) {
            x.pointee.out.removeAll()
            HTTP1LocalReplyWriter.write(reply, keepAlive: localKeepAlive, headOnly: x.pointee.request.isHEAD,
                                        requestID: x.pointee.requestID, into: &x.pointee.out)
            x.pointee.responseStatus = reply.status
            flushToClient()
            x.pointee.machine.answeredLocally(keepAlive: localKeepAlive)
            finishExchange()
            return
        }

        // Bytes after the head wait in `pending` until the upstream is ready.
        if !input.isEmpty {
            x.pointee.pending.append(raw: input)
            input = UnsafeRawBufferPointer(start: nil, count: 0)
        }
        // Routes match the normal form of the path (`PathNormalizer`: what a backend that resolves
        // `..`, `//` and escapes sees), not the raw bytes. `*` (OPTIONS) has no path.
        var target = x.pointee.forwardTarget ?? x.pointee.request.target
        let normal: PathNormalizer.Result
        if target.count == 1 && x.pointee.request.bytes[target.lowerBound] == UInt8(ascii: "*") {
            normal = PathNormalizer.Result(path: target, target: target, rewritten: false)
        } else {
            do { normal = try settings.router.paths.normalize(&x.pointee.request.bytes, target: target) } catch { return rejectRequest(error) }
        }
        guard let matched = settings.router.match(x.pointee.request, path: normal.path) else {
            return failExchange(status: 404, reason: "Not Found: no route matches host \(hostForMessages) and path \(pathForMessages)")
        }
        x.pointee.route = matched
        // The backend gets the bytes the client sent, unless `forward: normalized` — or a prefix
        // is stripped from a path normalisation changed: the raw target need not even begin with
        // the prefix (`//api/x`, `/%61pi/x`), the normal form does. Either way what is left after
        // the prefix has no dot segment, so it cannot climb above the backend's root.
        if settings.router.forwardNormalized || (matched.stripLength > 0 && normal.rewritten) { target = normal.target }
        if matched.stripLength > 0 { target = (target.lowerBound + matched.stripLength)..<target.upperBound }
        x.pointee.forwardTarget = target
        x.pointee.triedBackends.removeAll()
        x.pointee.failedAttempts.removeAll()
        x.pointee.lastConnectFailure = nil
        connectUpstream()
    }

    /// The request's host and path as text, for error messages (off the hot path).
    private var hostForMessages: String {
        x.pointee.request.hostField.map { "\"" + String(decoding: x.pointee.request.bytes[x.pointee.request.fields[$0].value], as: UTF8.self) + "\"" } ?? "(none)"
    }
    private var pathForMessages: String {
        String(decoding: x.pointee.request.bytes[x.pointee.forwardTarget ?? x.pointee.request.target], as: UTF8.self)
    }

    /// Applies the request limits that need the parsed head: `Host` syntax, target form, allowed
    /// methods, body size. Answers and returns false when the request is refused.
    private func admit() -> Bool {
        do {
            // An HTTP/1.1 request without Host never gets here (the parser refuses it).
            if let host = x.pointee.request.hostField { try RequestTarget.checkHost(x.pointee.request.bytes, x.pointee.request.fields[host].value) }
            switch try RequestTarget.validate(&x.pointee.request) {
            case .path(let path): x.pointee.forwardTarget = path
            case .asterisk: x.pointee.forwardTarget = x.pointee.request.target
            case .absolute(let path, let authority):
                x.pointee.forwardTarget = path
                // RFC 9112 §3.2.2: the target's authority is the host, whatever Host says, and a
                // proxy sends it as Host. Pointing the Host field at it makes routing, Host (unless
                // a route's host_header overrides it) and X-Forwarded-Host agree.
                if let host = x.pointee.request.hostField {
                    x.pointee.request.fields[host].value = authority
                } else {  // HTTP/1.0 without Host: add one, its name past the head's bytes
                    let name = x.pointee.request.bytes.count
                    x.pointee.request.bytes.append(contentsOf: "Host".utf8)
                    x.pointee.request.hostField = x.pointee.request.fields.count
                    x.pointee.request.fields.append(HeaderField(name: name..<(name + 4), value: authority))
                }
            }
        } catch {
            rejectRequest(error)
            return false
        }
        let limits = settings.config.limits
        if !settings.allowedMethods.isEmpty && !settings.allowedMethods.contains(where: { x.pointee.request.bytes.equals(x.pointee.request.method, $0) }) {
            failExchange(status: 405, reason: "Method Not Allowed: \(x.pointee.request.methodString) is not accepted here",
                         fields: settings.allowField.map { allow -> [(name: StaticString, value: String)] in [(name: "Allow", value: allow)] } ?? [])
            return false
        }
        if limits.maxBodyBytes > 0, case .contentLength(let n) = x.pointee.request.framing, n > UInt64(limits.maxBodyBytes) {
            // Refused before reading the body; the connection then drains and closes.
            failExchange(status: 413, reason: "Content Too Large: the body may be at most \(limits.maxBodyBytes) bytes")
            return false
        }
        return true
    }

    /// Picks a backend and obtains a connection to it. A connect that fails at once (a local
    /// error from `uv_tcp_connect`: EMFILE, EADDRNOTAVAIL, …) moves on to the next backend in
    /// this loop, never by recursion; one that fails later comes back through `connectFailed`.
    private func connectUpstream() {
        let group = currentUpstream
        while true {
            guard x.pointee.machine.mayAttempt(maxAttempts: settings.config.limits.maxUpstreamAttempts) else {
                return failExchange(status: ExchangeMachine.GiveUp.attemptsExhausted.status,
                                    reason: (x.pointee.lastConnectFailure ?? "Bad Gateway: no backend could be reached")
                                    + " (gave up after \(x.pointee.machine.attempts) attempts: limits.max_upstream_attempts)")
            }
            guard let index = group.balancer.pick(from: group.backends, excluding: x.pointee.triedBackends) else {
                let giveUp = x.pointee.machine.noBackend(anyHealthy: RoundRobinBalancer.anyHealthy(group.backends),
                                                         triedAny: !x.pointee.triedBackends.isEmpty)
                if giveUp == .noHealthyBackend {
                    return failExchange(status: giveUp.status, reason: "Service Unavailable: no healthy backend in upstream \(group.name)")
                }
                return failExchange(status: giveUp.status, reason: x.pointee.lastConnectFailure ?? "Bad Gateway: no backend could be reached")
            }
            x.pointee.triedBackends.insert(index)
            let choice = x.pointee.machine.attemptStarted()
            x.pointee.backendIndex = index
            x.pointee.servedBy = index
            x.pointee.upstreamStartNs = Platform.monotonicNanos()
            let backend = group.backends[index]
            group.balancer.started(index, of: group.backends)

            if case .pooledOrNew(let checkWholeSocket) = choice,
               let pooled = backend.pool.take(now: server.loop.now, checkSocket: checkWholeSocket) {
                attach(pooled, pooled: true)
                upstreamConnected()
                return
            }
            let conn = UpstreamConnection(backend: backend, loop: server.loop)
            attach(conn, pooled: false)
            do {
                // Strong captures (a weak one would give both objects a side table: slower ARC on
                // every request after): the closure is dropped when it runs or the stream closes.
                try conn.stream.connect(to: backend.address) { [self, conn] status in
                    guard hasState && x.pointee.upstream === conn else { return }
                    if status == 0 { self.upstreamConnected() } else { self.connectFailed(UVError(status)) }
                }
            } catch {
                let problem = error.localResourceProblem
                switch x.pointee.machine.connectFailed(isLocalResourceProblem: problem != nil) {
                case .localResourceExhausted: return localResourceFailure(problem!)
                case .tryNextBackend: noteConnectFailure(error)
                }
                continue
            }
            arm(.connect, ms: settings.config.timeouts.connectMs)
            return
        }
    }


    /// A connect failed after `uv_tcp_connect` accepted it (refused, timed out): try the next backend.
    private func connectFailed(_ error: UVError) {
        let problem = error.localResourceProblem
        switch x.pointee.machine.connectFailed(isLocalResourceProblem: problem != nil) {
        case .localResourceExhausted:
            localResourceFailure(problem!)
        case .tryNextBackend:
            noteConnectFailure(error)
            connectUpstream()
        }
    }

    /// The proxy itself is out of a resource (descriptors, ports, memory): no backend is to
    /// blame and every other one would fail the same way, so no failover — a 503 that says so.
    private func localResourceFailure(_ problem: String) {
        releaseUpstream(reusable: false)
        failExchange(status: 503, reason: "Service Unavailable: \(problem)", fields: [(name: "Retry-After", value: "1")])
    }

    /// Records why the current backend could not be reached and lets its connection go.
    private func noteConnectFailure(_ error: UVError) {
        let backend = currentBackend
        x.pointee.lastConnectFailure = "Bad Gateway: cannot connect to backend \(backend.id) (\(backend.address)): \(error.name)"
        x.pointee.failedAttempts.append(ErrorPage.Attempt(backend: backend.id, url: backend.url, address: backend.address.description,
                                          problem: ErrorPage.explain(error, url: backend.url)))
        releaseUpstream(reusable: false, outcome: .connectFailure)
    }

    private func attach(_ conn: UpstreamConnection, pooled: Bool) {
        x.pointee.upstream = conn
        conn.owner = self
        x.pointee.upstreamReady = false
        x.pointee.machine.upstreamAttached(pooled: pooled)
        x.pointee.responseHeadBytes.reset()
    }

    /// The upstream connection is open: send the head and whatever body bytes are buffered.
    private func upstreamConnected() {
        guard let conn = x.pointee.upstream else { return }
        conn.stream.startReading()
        x.pointee.upstreamReady = true
        x.pointee.requestPipe = Pipe(from: client, to: conn.stream)
        x.pointee.responsePipe = Pipe(from: conn.stream, to: client)
        x.pointee.lastUpstreamActivity = server.loop.now
        x.pointee.machine.upstreamConnected()
        let t = timeouts
        x.pointee.responseHeadDueAt = x.pointee.machine.requestComplete ? server.loop.now + UInt64(t.upstreamMs) : 0
        arm(.upstream, ms: x.pointee.machine.requestComplete ? t.upstreamMs : min(t.upstreamMs, t.clientBodyMs))

        x.pointee.out.removeAll()
        let framing: HeaderRewriter.OutgoingFraming
        switch x.pointee.request.framing {
        case .contentLength(let n): framing = .contentLength(n)
        case .chunked: framing = .chunked
        case .none, .untilClose:
            // The parser reports `Content-Length: 0` as no body; some origins insist on seeing
            // the zero (411 for a POST without it), so it is forwarded as sent.
            framing = x.pointee.request.hasContentLengthField ? .contentLength(0) : .none
        }
        x.pointee.rewriter.writeUpstreamRequest(&x.pointee.request, framing: framing, peerIP: peerIP, peerIsIPv6: peerIsIPv6,
                                      defaultHost: currentBackend.authorityBytes, target: x.pointee.forwardTarget,
                                      hostOverride: hostOverride, forwardedPrefix: x.pointee.route?.forwardedPrefix ?? [],
                                      upgrade: x.pointee.machine.wantsUpgrade, requestID: x.pointee.requestID, into: &x.pointee.out)

        if x.pointee.pending.isEmpty || x.pointee.machine.requestComplete {
            flushToUpstream()
            return
        }
        // Body bytes that arrived before the connection: send them behind the head.
        var buffered = takePending()
        client.resumeReading(.pipelined)
        buffered.withUnsafeBytes { raw in
            handleClientBytes(raw)
        }
        givePendingStorageBack(&buffered)
        guard phase == .exchange else { return }  // the exchange ended meanwhile
        if !x.pointee.out.isEmpty { flushToUpstream() }
        if clientSentEOF && !x.pointee.machine.requestComplete { abort() }  // body cut short
    }

    // MARK: - Request body

    /// Forwards request body bytes; returns how many of `input` belonged to the body.
    private func relayRequestBody(_ input: UnsafeRawBufferPointer) -> Int {
        switch x.pointee.request.framing {
        case .contentLength:
            let take = Int(min(UInt64(input.count), x.pointee.requestBodyRemaining))
            x.pointee.requestBodyRemaining -= UInt64(take)
            flushToUpstream(extra: UnsafeRawBufferPointer(rebasing: input[..<take]))
            if x.pointee.requestBodyRemaining == 0 { requestBodyDone() }
            return take
        case .chunked:
            let consumed: Int
            do {
                let maxBody = UInt64(settings.config.limits.maxBodyBytes)
                consumed = try x.pointee.requestDecoder.decode(input) { data throws(HTTPParseError) in
                    x.pointee.requestBodyBytes += UInt64(data.count)
                    if maxBody > 0 && x.pointee.requestBodyBytes > maxBody {
                        throw HTTPParseError(status: 413, reason: "the chunked body grew past \(maxBody) bytes")
                    }
                    x.pointee.out.appendHex(data.count)
                    x.pointee.out.append("\r\n")
                    x.pointee.out.append(raw: data)
                    x.pointee.out.append("\r\n")
                }
            } catch {
                // Part of the request may be upstream already: that connection is spoiled.
                x.pointee.machine.upstreamSpoiled()
                rejectRequest(error)
                return input.count
            }
            if x.pointee.requestDecoder.isComplete {
                x.pointee.out.append("0\r\n\r\n")
                flushToUpstream()
                requestBodyDone()
            } else {
                flushToUpstream()
            }
            return consumed
        case .none, .untilClose:
            requestBodyDone()
            return 0
        }
    }

    private func requestBodyDone() {
        x.pointee.machine.requestBodyFinished()
        x.pointee.lastUpstreamActivity = server.loop.now
        if !x.pointee.machine.responseStarted { x.pointee.responseHeadDueAt = server.loop.now + UInt64(timeouts.upstreamMs) }
    }

    /// The timeouts of the current exchange: its route's (asked for only once a route matched).
    private var timeouts: TimeoutsConfig { x.pointee.route?.timeouts ?? settings.config.timeouts }

    /// Sends `out` (and `extra`) to the upstream as one write through the request pipe.
    private func flushToUpstream(extra: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        guard x.pointee.requestPipe != nil else { return }
        if x.pointee.out.isEmpty && extra.isEmpty { return }
        x.pointee.out.withUnsafeBytes { head in x.pointee.requestPipe!.send(head, extra) }
        x.pointee.out.removeAll()
    }

    // MARK: - Upstream input
    //
    // The upstream connection calls these through `UpstreamConnectionDelegate`, a protocol
    // witness that knows no `Client`: without `@_specialize` each call ran the unspecialised
    // generic body, looking up generic metadata at every step (~2,800 instructions per request).

    @_specialize(where Client == TCPStream)
    func upstreamRead(_ bytes: UnsafeRawBufferPointer) {
        if let tunnel { return tunnel.upstreamRead(bytes) }
        x.pointee.lastUpstreamActivity = server.loop.now
        let exchange = exchangesFinished
        var input = bytes
        while !input.isEmpty {
            if x.pointee.machine.responseStarted && x.pointee.responseFraming == .untilClose {
                relayResponseBody(input)
                return
            }
            if !x.pointee.machine.responseStarted {
                let consumed: Int
                do { consumed = try x.pointee.responseHeadBytes.append(input) } catch {
                    return upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent a response head that cannot be read (\(error.reason))")
                }
                input = UnsafeRawBufferPointer(rebasing: input[consumed...])
                guard x.pointee.responseHeadBytes.isComplete else { return }
                x.pointee.responseHeadBytes.moveBytes(into: &x.pointee.response.bytes)
                do {
                    try HeadParser.parseResponse(into: &x.pointee.response, requestWasHEAD: x.pointee.request.isHEAD)
                } catch {
                    return upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent a malformed response (\(error.reason))")
                }
                if x.pointee.response.isInterim {
                    let maxInterim = settings.config.limits.maxInterimResponses
                    switch x.pointee.machine.interimResponse(maxInterim: maxInterim, clientVersionMinor: x.pointee.request.versionMinor) {
                    case .refuse:
                        return upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent more than \(maxInterim) interim (1xx) responses")
                    case .relay:
                        // 100 Continue / 103 Early Hints; the final head follows.
                        x.pointee.rewriter.writeInterimResponse(x.pointee.response, into: &x.pointee.out)
                        flushToClient()
                        x.pointee.machine.interimRelayed()
                    case .drop:
                        break
                    }
                    x.pointee.responseHeadBytes.reset()
                    continue
                }
                x.pointee.upstreamHeadNs = Platform.monotonicNanos()
                x.pointee.responseStatus = x.pointee.response.status
                let framing = x.pointee.response.framing
                let untilCloseForClient = x.pointee.request.versionMinor != 1 && (framing == .chunked || framing == .untilClose)
                switch x.pointee.machine.finalResponseHead(status: x.pointee.response.status, clientKeepAlive: x.pointee.request.keepAlive,
                                                           draining: server.isDraining, bodyUntilCloseForClient: untilCloseForClient) {
                case .refuseUnaskedSwitch:
                    return upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) switched protocols unasked")
                case .tunnel:
                    return beginTunnel(rest: input)
                case .relay:
                    startResponse()
                }
                if responseFinishedIfBodyless() {
                    // Bytes after a body-less response break framing: never reuse that connection.
                    if !input.isEmpty { x.pointee.machine.upstreamSpoiled() }
                    return finishExchange()
                }
                continue
            }
            let consumed = relayResponseBody(input)
            if exchangesFinished != exchange || phase != .exchange { return }
            input = UnsafeRawBufferPointer(rebasing: input[consumed...])
        }
        if !x.pointee.out.isEmpty { flushToClient() }
    }

    private var backendID: String { x.pointee.backendIndex >= 0 ? currentBackend.id : "?" }

    /// The backend of the exchange in flight (`backendIndex >= 0`).
    private var currentBackend: Backend { currentUpstream.backends[x.pointee.backendIndex] }

    /// The upstream the matched route names; nil before a route matched.
    private var routedUpstream: Upstream? {
        guard let route = x.pointee.route else { return nil }
        return settings.upstreams[route.upstream]
    }

    /// `routedUpstream` once a route matched (only asked for then).
    private var currentUpstream: Upstream { routedUpstream! }

    /// The `Host` a route's `host_header` policy sends instead of the client's, if any.
    private var hostOverride: [UInt8]? {
        switch x.pointee.route?.hostHeader ?? .preserve {
        case .preserve: nil
        case .backend: currentBackend.authorityBytes
        case .literal(let value): value
        }
    }

    /// The final response head arrived: decide the client-side framing and write the head.
    private func startResponse() {
        x.pointee.lastUpstreamActivity = server.loop.now
        x.pointee.responseIdleLimitMs = UInt64(x.pointee.response.isEventStream ? timeouts.eventStreamIdleMs : timeouts.responseIdleMs)
        // Only ever sooner: a nearer deadline (the client's body pauses) must keep its time.
        if timerPurpose == .upstream && server.loop.now + x.pointee.responseIdleLimitMs < deadline { setDeadline(in: x.pointee.responseIdleLimitMs) }
        x.pointee.responseFraming = x.pointee.response.framing
        switch x.pointee.response.framing {
        case .none:
            x.pointee.clientFraming = .none
        case .contentLength(let n):
            x.pointee.responseBodyRemaining = n
            x.pointee.clientFraming = .contentLength(n)
        case .chunked, .untilClose:
            x.pointee.responseDecoder.reset()
            if x.pointee.request.versionMinor == 1 {
                x.pointee.clientFraming = .chunked
            } else {
                // HTTP/1.0 clients never get chunked: the body is delimited by closing (the
                // machine closes the connection after it).
                x.pointee.clientFraming = .untilClose
            }
        }
        x.pointee.out.removeAll()
        x.pointee.rewriter.writeClientResponse(&x.pointee.response, framing: x.pointee.clientFraming, clientVersionMinor: x.pointee.request.versionMinor,
                                     closeAfter: x.pointee.machine.closeAfterResponse, requestID: x.pointee.requestID, into: &x.pointee.out)
    }

    /// For a response without a body, flushes the head and reports completion.
    private func responseFinishedIfBodyless() -> Bool {
        switch x.pointee.responseFraming {
        case .none:
            flushToClient()
            return true
        case .contentLength(0):
            flushToClient()
            return true
        default:
            return false
        }
    }

    /// Relays response body bytes; returns how many belonged to this response. Finishes the
    /// exchange when the body is complete.
    @discardableResult
    private func relayResponseBody(_ input: UnsafeRawBufferPointer) -> Int {
        switch x.pointee.responseFraming {
        case .contentLength:
            let take = Int(min(UInt64(input.count), x.pointee.responseBodyRemaining))
            x.pointee.responseBodyRemaining -= UInt64(take)
            flushToClient(extra: UnsafeRawBufferPointer(rebasing: input[..<take]))
            if x.pointee.responseBodyRemaining == 0 {
                if take < input.count { x.pointee.machine.upstreamSpoiled() }  // bytes beyond the declared length
                finishExchange()
            }
            return take
        case .chunked:
            let consumed: Int
            let chunked = x.pointee.clientFraming == .chunked
            do {
                consumed = try x.pointee.responseDecoder.decode(input) { data throws(HTTPParseError) in
                    if chunked {
                        x.pointee.out.appendHex(data.count)
                        x.pointee.out.append("\r\n")
                        x.pointee.out.append(raw: data)
                        x.pointee.out.append("\r\n")
                    } else {
                        x.pointee.out.append(raw: data)
                    }
                }
            } catch {
                switch x.pointee.machine.malformedResponseBody() {
                case .answer:
                    // The head is still in `out` (it arrived in this same read): nothing reached
                    // the client, so it can still get a proper 502.
                    x.pointee.out.removeAll()
                    upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent a malformed chunked body (\(error.reason))")
                case .cutClient:
                    releaseUpstream(reusable: false, outcome: .upstreamFailure)
                    abort()
                }
                return input.count
            }
            if x.pointee.responseDecoder.isComplete {
                if chunked { x.pointee.out.append("0\r\n\r\n") }
                flushToClient()
                if consumed < input.count { x.pointee.machine.upstreamSpoiled() }  // bytes beyond the last chunk
                finishExchange()
            } else {
                flushToClient()
            }
            return consumed
        case .untilClose:
            if x.pointee.clientFraming == .chunked {
                x.pointee.out.appendHex(input.count)
                x.pointee.out.append("\r\n")
                x.pointee.out.append(raw: input)
                x.pointee.out.append("\r\n")
                flushToClient()
            } else {
                flushToClient(extra: input)
            }
            return input.count
        case .none:
            return 0
        }
    }

    private func flushToClient(extra: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        if x.pointee.out.isEmpty && extra.isEmpty { return }
        x.pointee.machine.responseBytesSent()
        if x.pointee.responsePipe != nil {
            x.pointee.out.withUnsafeBytes { head in x.pointee.responsePipe!.send(head, extra) }
        } else {
            x.pointee.out.withUnsafeBytes { head in client.write(head, extra) }
        }
        x.pointee.out.removeAll()
    }

    /// The upstream closed or failed.
    @_specialize(where Client == TCPStream)
    func upstreamEnded(_ code: Int32) {
        if let tunnel { return tunnel.upstreamEnded(code) }
        guard phase == .exchange else { return }
        switch x.pointee.machine.upstreamClosed(eof: code == UVError.eof, bodyUntilClose: x.pointee.responseFraming == .untilClose,
                                                 sawResponseBytes: !x.pointee.responseHeadBytes.bytes.isEmpty) {
        case .responseComplete:
            // The normal end of a close-delimited body.
            if x.pointee.clientFraming == .chunked {
                x.pointee.out.append("0\r\n\r\n")
                flushToClient()
            }
            return finishExchange()
        case .retryOnNewConnection:
            // The keep-alive race: a pooled connection died before answering.
            server.stats.add(WorkerStats.retries)
            releaseUpstream(reusable: false)
            x.pointee.triedBackends.removeAll()
            return connectUpstream()
        case .failed:
            break
        }
        let reason = code == UVError.eof
            ? "Bad Gateway: backend \(backendID) closed the connection before a complete response"
            : "Bad Gateway: backend \(backendID) failed: \(UVError(code).name)"
        upstreamFailed(status: 502, reason: reason)
    }

    /// A write to the upstream failed: the backend stopped reading — typically it answered early
    /// (413, 401) and closed. What it sent is still read and relayed; the read side (its end, or
    /// the upstream deadline) decides how the exchange ends. Request body bytes from here on are
    /// read from the client and dropped (the stream ignores writes after a failure).
    @_specialize(where Client == TCPStream)
    func upstreamWriteFailed(_ code: Int32) {
        if let tunnel { return tunnel.upstreamEnded(code) }
        guard phase == .exchange else { return }
        x.pointee.machine.upstreamSpoiled()
    }

    @_specialize(where Client == TCPStream)
    func upstreamDrained() {
        if let tunnel { return tunnel.upstreamDrained() }
        x.pointee.requestPipe?.sinkDrained()
    }

    // MARK: - Tunnels

    /// The backend accepted the protocol switch: relay its 101, then join the two connections.
    /// `rest` holds what the backend sent right after its head (the new protocol's first bytes).
    private func beginTunnel(rest: UnsafeRawBufferPointer) {
        guard let conn = x.pointee.upstream else { return }
        disarm()
        x.pointee.requestPipe?.detach()
        x.pointee.responsePipe?.detach()
        x.pointee.requestPipe = nil
        x.pointee.responsePipe = nil
        x.pointee.out.removeAll()
        x.pointee.rewriter.writeSwitchingProtocols(x.pointee.response, into: &x.pointee.out)
        flushToClient()
        x.pointee.machine.tunnelStarted()
        phase = .tunnel
        server.tunnelOpened()
        let early = x.pointee.pending
        x.pointee.pending = []
        client.resumeReading(.pipelined)
        let tunnel = Tunnel(loop: server.loop, client: client, upstream: conn.stream,
                            idleLimitMs: settings.config.timeouts.tunnelIdleMs) { [unowned self] in self.teardown() }
        self.tunnel = tunnel
        tunnel.start(fromClient: early, fromUpstream: rest)
        if clientSentEOF { tunnel.clientEnded(UVError.eof) }
    }

    /// The upstream broke the exchange: answer 502/504 if nothing was sent yet, else cut the client.
    private func upstreamFailed(status: UInt16, reason: String) {
        if x.pointee.backendIndex >= 0 {
            let b = currentBackend
            x.pointee.failedAttempts.append(ErrorPage.Attempt(backend: b.id, url: b.url, address: b.address.description, problem: reason))
        }
        releaseUpstream(reusable: false, outcome: status == 504 ? .timeout : .upstreamFailure)
        switch x.pointee.machine.upstreamFailed() {
        case .cutClient: abort()
        case .answer: failExchange(status: status, reason: reason)
        }
    }

    // MARK: - Ending an exchange

    /// Sends an error response for the current request and ends the exchange.
    private func failExchange(status: UInt16, reason: String, fields: [(name: StaticString, value: String)] = []) {
        x.pointee.responseStatus = status
        if status == 405 || status == 413 { server.stats.add(WorkerStats.rejectionIndex(status)) }
        releaseUpstream(reusable: false)
        let keepAlive = x.pointee.machine.keepAliveAfterLocalAnswer(clientKeepAlive: x.pointee.request.keepAlive,
                                                                    draining: server.isDraining)
        let reply: LocalReply
        if status >= 502 && status <= 504 && ErrorPage.wanted(by: x.pointee.request) {
            let routed = routedUpstream
            let unhealthy = status == 503 ? (routed?.backends ?? []).map { b in (b.id, b.url, b.shared.probeRecord.lastError) } : []
            let page = ErrorPage.html(status: status, reason: reason, upstream: routed?.name ?? "none", route: x.pointee.route?.description ?? "none",
                                      attempts: x.pointee.failedAttempts, unhealthy: unhealthy)
            reply = LocalReply(status: status, contentType: "text/html; charset=utf-8", body: page, fields: fields)
        } else {
            reply = .text(status, reason, fields: fields)
        }
        x.pointee.out.removeAll()
        HTTP1LocalReplyWriter.write(reply, keepAlive: keepAlive, headOnly: x.pointee.request.isHEAD,
                                    requestID: x.pointee.requestID, into: &x.pointee.out)
        flushToClient()
        x.pointee.machine.answeredLocally(keepAlive: keepAlive)
        finishExchange()
    }

    /// The response is complete: release the upstream, then wait for the next request or close.
    private func finishExchange() {
        recordExchange()
        exchangesFinished &+= 1
        let reusable = x.pointee.machine.upstreamMayBePooled(responseKeepAlive: x.pointee.response.keepAlive,
                                                             responseBodyUntilClose: x.pointee.responseFraming == .untilClose)
        releaseUpstream(reusable: reusable, backendKeepAliveMs: reusable ? keepAliveTimeoutMs(x.pointee.response) : nil,
                        outcome: .response(status: x.pointee.responseStatus))
        let draining = server.isDraining
        if x.pointee.machine.closesAfterResponse(draining: draining,
                                                 nextRequestWaiting: draining && (!x.pointee.pending.isEmpty || client.hasPendingInputOrEOF)) {
            // Draining: a response whose head went out before the shutdown began could not say
            // `Connection: close`, but closing an idle keep-alive connection is always allowed.
            // A request already sent behind it is answered first (with `Connection: close`).
            return closeGracefully()
        }
        // Ready for the next request on this connection. Scratch buffers that grew large (chunked
        // re-framing) are let go; the state itself goes back to the pool once nothing is buffered.
        x.pointee.readyForNextExchange()
        phase = .head
        x.pointee.machine.finished()
        arm(.idle, ms: settings.config.timeouts.idleMs)
        // Reading resumes once the buffered requests are down to the limit (`handleClientBytes`).
        if x.pointee.pending.count <= Self.pendingLimit { client.resumeReading(.pipelined) }
        if !inInputLoop {
            if hasPending || clientSentEOF {
                handleClientBytes(UnsafeRawBufferPointer(start: nil, count: 0))
            } else {
                recycleExchangeStateIfIdle()
            }
        }
    }

    /// The backend's `Keep-Alive: timeout=N` in milliseconds, if it sent one.
    private func keepAliveTimeoutMs(_ head: ResponseHead) -> UInt64? {
        guard let i = head.keepAliveField else { return nil }
        let b = head.bytes
        var result: UInt64? = nil
        forEachToken(b, head.fields[i].value) { token in
            let key = token.lowerBound..<min(token.lowerBound + 8, token.upperBound)
            guard result == nil, token.count > 8, b.equalsIgnoringCase(key, "timeout=") else { return }
            var seconds: UInt64 = 0
            for d in b[key.upperBound..<token.upperBound] {
                guard d >= 48 && d <= 57, seconds < 1_000_000 else { return }
                seconds = seconds * 10 + UInt64(d - 48)
            }
            result = seconds * 1000
        }
        return result
    }

    /// Gives the upstream connection back to its pool (or closes it), detaches the pipes, and
    /// tells the balancer how the attempt ended (`outcome`: not the backend's doing unless said).
    private func releaseUpstream(reusable: Bool, backendKeepAliveMs: UInt64? = nil,
                                 outcome: AttemptOutcome = .notTheBackend) {
        guard hasState else { return }
        x.pointee.requestPipe?.detach()
        x.pointee.responsePipe?.detach()
        x.pointee.requestPipe = nil
        x.pointee.responsePipe = nil
        if let conn = x.pointee.upstream {
            x.pointee.upstream = nil
            conn.owner = nil
            if reusable && !conn.isClosed {
                conn.exchangesCompleted += 1
                conn.backend.pool.put(conn, now: server.loop.now, backendKeepAliveMs: backendKeepAliveMs)
            } else {
                conn.close()
            }
        }
        if x.pointee.backendIndex >= 0 {
            let head = x.pointee.upstreamHeadNs, start = x.pointee.upstreamStartNs
            let headMicros: UInt64? = head > start ? (head &- start) / 1000 : nil
            let group = currentUpstream
            group.balancer.finished(x.pointee.backendIndex, of: group.backends, outcome: outcome, headMicros: headMicros)
            x.pointee.backendIndex = -1
        }
        x.pointee.upstreamReady = false
    }

    /// Rejects a malformed request with its status and reason, then closes — after reading
    /// what the client still sends for a moment, so the status reaches it instead of a reset.
    private func rejectRequest(_ error: HTTPParseError) {
        if !x.pointee.exchangeOpen { beginAccounting(parsed: false) }  // refused before its head was parsed
        releaseUpstream(reusable: false)
        if x.pointee.machine.responseStarted { return abort() }  // too late to refuse: the client sees a cut response
        server.stats.add(WorkerStats.rejectionIndex(error.status))
        x.pointee.responseStatus = error.status
        x.pointee.out.removeAll()
        // No X-Request-Id: the head may not have been read far enough to have one.
        // Some parser errors already begin with the reason phrase: it is not said twice.
        let phrase = StatusText.reason(error.status)
        let text = error.reason.hasPrefix(phrase) ? error.reason : "\(phrase): \(error.reason)"
        HTTP1LocalReplyWriter.write(.text(error.status, text),
                                    keepAlive: false, headOnly: false, requestID: [], into: &x.pointee.out)
        flushToClient()
        recordExchange()
        closeGracefully()
    }

    /// Half-closes after the queued output, discards input for a moment, then closes.
    private func closeGracefully() {
        guard phase != .closing && phase != .closed else { return }
        phase = .closing
        releaseUpstream(reusable: false)
        if hasState { x.pointee.pending = [] }
        client.resumeReading(.pipelined)
        client.resumeReading(.backpressure)
        client.resumeReading(.outputQueued)
        client.shutdown { [self] status in
            // Everything queued is out and our FIN with it.
            shutdownDone = true
            if clientSentEOF || status < 0 { teardown() } else { arm(.linger, ms: 2000) }
        }
        // A client that stops reading cannot hold the connection open forever.
        arm(.flush, ms: settings.config.timeouts.idleMs)
    }

    /// Closes everything at once (errors, client aborts, truncated responses).
    private func abort() {
        teardown()
    }

    private func teardown() {
        guard phase != .closed else { return }
        phase = .closed
        if let tunnel {
            self.tunnel = nil
            tunnel.end()
            server.tunnelClosed()
        }
        recordExchange()  // a tunnel's, or one cut short (499 if no response had begun)
        countTraffic()
        releaseUpstream(reusable: false)
        recycleExchangeState(idle: false)
        disarm()
        timer.close()
        client.close()
        server.clientClosed(self)
    }

    // MARK: - Accounting

    /// A request begins to count: `parsed` says whether its head can be read for the log.
    private func beginAccounting(parsed: Bool) {
        x.pointee.exchangeOpen = true
        x.pointee.requestParsed = parsed
        x.pointee.route = nil
        x.pointee.servedBy = -1
        x.pointee.responseStatus = 0
        x.pointee.upstreamHeadNs = 0
    }

    /// Counts the exchange in the metrics (its backend's, its upstream's when no backend took
    /// it, else the proxy's own) and writes its access log line. Once per exchange.
    private func recordExchange() {
        guard hasState, x.pointee.exchangeOpen else { return }
        x.pointee.exchangeOpen = false
        let micros = (Platform.monotonicNanos() &- x.pointee.requestStartNs) / 1000
        let status = x.pointee.responseStatus != 0 ? x.pointee.responseStatus : 499
        let routed = routedUpstream
        let backend = x.pointee.servedBy >= 0 ? routed?.backends[x.pointee.servedBy] : nil
        var upstreamMicros: UInt64? = nil
        if let backend {
            RequestStats.record(backend.stats, status: status, micros: micros)
            if x.pointee.upstreamHeadNs != 0 {
                let taken = (x.pointee.upstreamHeadNs &- x.pointee.upstreamStartNs) / 1000
                RequestStats.recordUpstream(backend.stats, micros: taken)
                upstreamMicros = taken
            }
        } else if let routed {
            RequestStats.record(routed.stats, status: status, micros: micros)
        } else {
            RequestStats.record(server.stats, at: WorkerStats.unrouted, status: status, micros: micros)
        }
        countTraffic()
        guard let log = server.accessLog else { return }
        log.write(AccessLogEntry(client: peerIP, requestParsed: x.pointee.requestParsed, status: status,
                                 bytesSent: client.bytesWritten &- x.pointee.bytesSentAtStart, durationMicros: micros,
                                 upstreamMicros: upstreamMicros, requestID: x.pointee.requestParsed ? x.pointee.requestID : []),
                  upstream: routed, backend: backend, request: &x.pointee.request)
    }

    /// Adds the client traffic since the last call to the worker's byte counters.
    private func countTraffic() {
        let sent = client.bytesWritten, received = client.bytesRead
        server.stats.add(WorkerStats.bytesSent, sent &- bytesSentCounted)
        server.stats.add(WorkerStats.bytesReceived, received &- bytesReceivedCounted)
        bytesSentCounted = sent
        bytesReceivedCounted = received
    }

    // MARK: - Timers

    /// Sets the one deadline a connection has at a time. Lazily, like nginx's lazy timers: a
    /// running libuv timer due no later than the new deadline is left alone and, firing early,
    /// re-arms itself for the rest. A keep-alive exchange moves its deadline three times
    /// (header, upstream, idle), each later than the last: re-arming each time cost a timer-heap
    /// removal and insertion (~450 instructions per request in callgrind).
    private func arm(_ purpose: TimerPurpose, ms: Int) {
        timerPurpose = purpose
        setDeadline(in: UInt64(max(ms, 1)))
    }

    private func setDeadline(in ms: UInt64) {
        let now = server.loop.now
        deadline = now + ms
        if timerDue != 0 && timerDue <= deadline { return }
        timerDue = deadline
        timer.start(timeoutMs: ms)
    }

    /// Drops the deadline; a timer still running finds nothing to do when it fires.
    private func disarm() {
        timerPurpose = .none
    }

    private func timerFired() {
        timerDue = 0
        guard timerPurpose != .none else { return }
        let now = server.loop.now
        if now < deadline { return setDeadline(in: deadline - now) }  // fired for an earlier one
        switch timerPurpose {
        case .none:
            return
        case .idle:
            timerPurpose = .none
            closeGracefully()
        case .clientHeader:
            timerPurpose = .none
            if !hasState || x.pointee.requestHeadBytes.bytes.isEmpty {
                closeGracefully()
            } else {
                rejectRequest(HTTPParseError(status: 408, reason: "the request head took longer than \(settings.config.timeouts.clientHeaderMs) ms"))
            }
        case .connect:
            timerPurpose = .none
            connectFailed(UVError(UVError.timedOut))
        case .upstream:
            upstreamTimerFired()
        case .flush, .linger:
            timerPurpose = .none
            teardown()
        }
    }

    /// Checks the deadlines of an exchange in flight and re-arms for the nearest: the client's
    /// pauses while it sends its body (`client_body_ms`), the wait for the response head in total
    /// (`upstream_ms` from the request's last byte), and the silences within the response body
    /// (`response_idle_ms`, `event_stream_idle_ms`). Timestamps are updated on every read; the
    /// timer is only re-armed when it fires (no heap churn per read).
    private func upstreamTimerFired() {
        let now = server.loop.now
        // A client slow to read its response is not the backend's silence.
        if x.pointee.machine.responseStarted && client.isCongested { x.pointee.lastUpstreamActivity = now }
        let t = timeouts
        let verdict = x.pointee.machine.checkDeadlines(
            ExchangeMachine.Clock(now: now, lastClientActivity: lastClientActivity,
                                  lastUpstreamActivity: x.pointee.lastUpstreamActivity, responseHeadDueAt: x.pointee.responseHeadDueAt),
            ExchangeMachine.Limits(clientBodyMs: UInt64(t.clientBodyMs), upstreamMs: UInt64(t.upstreamMs),
                                   responseIdleMs: x.pointee.responseIdleLimitMs))
        switch verdict {
        case .rearm(let ms):
            setDeadline(in: ms)
        case .requestBodyStalled(.answer):
            timerPurpose = .none
            rejectRequest(HTTPParseError(status: 408, reason: "the request body stalled for \(t.clientBodyMs) ms"))
        case .requestBodyStalled(.cutClient):
            timerPurpose = .none
            abort()  // the response has begun: all the client can be told is a cut
        case .responseStalled:
            timerPurpose = .none
            releaseUpstream(reusable: false, outcome: .timeout)
            abort()
        case .responseHeadTimedOut:
            timerPurpose = .none
            upstreamFailed(status: 504, reason: "Gateway Timeout: backend \(backendID) did not send a response head within \(t.upstreamMs) ms")
        }
    }


    /// Closes at once (server shutdown).
    func forceClose() { teardown() }

    /// Graceful shutdown: a connection waiting for its next request closes now. One with a
    /// request under way — or one whose next request already sits unread in the socket — carries
    /// on; its response says `Connection: close`. A tunnel (WebSocket) carries on too, like a
    /// request in flight: it ends when either side closes it or when `shutdown_grace_ms` is over.
    func closeIfIdle() {
        guard phase == .head, !hasState || (x.pointee.requestHeadBytes.bytes.isEmpty && x.pointee.pending.isEmpty),
              !client.hasPendingInputOrEOF else { return }
        closeGracefully()
    }
}
