/// What the server asks of its client connections at shutdown, whatever their transport.
protocol DownstreamConnectionControl: AnyObject {
    /// Graceful shutdown: close now if waiting for a request, else after the exchange under way.
    func closeIfIdle()
    /// Immediate shutdown.
    func forceClose()
}

/// One HTTP/1 client connection: it reads requests, one at a time and in order, and hands each
/// to its `ProxyExchange`, whose response it writes back as HTTP/1.1 (it is the exchange's
/// `ResponseSink`).
///
/// The connection owns what belongs to HTTP/1 on the client side: reading and pipelining (input
/// buffered behind an exchange, reading paused while answers pile up unread), the request head
/// and its deadline, the request body's framing (Content-Length, chunked), the response's framing
/// for this client (chunked re-framing, close-delimited for HTTP/1.0), keep-alive and the idle
/// deadline, lingering close, drain, and the tunnel after a `101`. Everything between a parsed
/// request and its response — admit, route, balance, connect, retry, error answers — is the
/// exchange's.
///
/// Lifetime: the client stream's callbacks hold the connection; they are dropped when the stream
/// closes. Threading: loop thread only.
final class HTTP1ServerConnection<Client: ByteStream>: ExchangeDownstream, DownstreamConnectionControl {
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
    private let exchangeStates: ExchangeStatePool
    /// Runs this connection's requests, one after the other (strong `let`: no retain per call).
    private let exchange: ProxyExchange<HTTP1ServerConnection<Client>>
    private let timer: Timer

    /// The connection came through `admin.listen`.
    var isAdminListener: Bool { exchange.isAdminListener }

    /// The listener's HSTS field, on connections that really are TLS (RFC 6797 §7.2: never over
    /// cleartext, such as the 400 for plain HTTP sent to the TLS port).
    private var hstsField: [UInt8]? { exchange.tls != nil ? exchange.listener.hstsField : nil }

    private enum Phase {
        /// Waiting for (the rest of) a request head.
        case head
        /// A request is being handled by `exchange`.
        case exchange
        /// A protocol switch (101) joined the two connections: see `tunnel`.
        case tunnel
        /// Closing: the response is out (or an error was sent); input is discarded.
        case closing
        case closed
    }
    private var phase = Phase.head

    /// The state of the request under way, or of requests waiting in `pending`: the exchange's
    /// (`exchange.x`), taken from the worker's pool when a request's first byte arrives, given
    /// back once the connection is idle with nothing buffered (`recycleExchangeStateIfIdle`) and
    /// at teardown. Held only in phase `.head` with something buffered, and in the phases after
    /// it: an idle keep-alive connection holds no request or response buffers.
    private var x: UnsafeMutablePointer<ExchangeState> { exchange.x }
    private var hasState: Bool { exchange.hasState }

    private var tunnel: (any ClientTunnel)?

    private var clientSentEOF = false
    /// Our FIN went out after all queued output (see `closeGracefully`).
    private var shutdownDone = false
    private var lastClientActivity: UInt64 = 0
    /// The client's framing of the response under way (chosen from the backend's and the
    /// client's version when the head goes out).
    private var clientFraming = HeaderRewriter.OutgoingFraming.none

    /// Client traffic already added to the worker's byte counters.
    private var traffic = ClientTraffic()

    private enum TimerPurpose {
        case none, clientHeader, idle
        /// The exchange's deadline (connect, request body pauses, response head, response silence).
        case exchange
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

    init(server: ProxyServer, client: Client, isAdminListener: Bool, listener: ListenerRole = .cleartext,
         tls: TLSSessionFacts? = nil, exchangeStates: ExchangeStatePool) {
        self.server = server
        self.exchangeStates = exchangeStates
        self.client = client
        settings = server.settings
        timer = Timer(loop: server.loop)
        exchange = ProxyExchange(server: server, settings: settings, detached: exchangeStates.detached,
                                 peerAddress: client.peerAddress, isAdminListener: isAdminListener, listener: listener, tls: tls)
        exchange.setDownstream(self)
        probingForH2C = listener.tls == nil && server.settings.config.http2.h2c
    }

    func start() {
        client.setNoDelay()
        client.onRead = { [self] bytes in clientRead(bytes) }
        client.onReadEnd = { [self] code in clientEnded(code) }
        client.onWriteError = { [self] _ in abort() }
        client.onDrain = { [self] in
            if let tunnel { return tunnel.clientDrained() }
            if phase == .exchange { exchange.responseSinkDrained() }
            if phase == .head { clientOutputDrained() }
        }
        timer.onFire = { [self] in timerFired() }
        arm(.clientHeader, ms: settings.config.timeouts.clientHeaderMs)
        client.startReading()
    }

    // MARK: - Client input

    private func clientRead(_ bytes: UnsafeRawBufferPointer) {
        lastClientActivity = server.loop.now
        if probingForH2C { return probeForH2C(bytes) }
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
        // Half-closed inside a body the upstream is waiting for: it can never complete.
        if phase == .exchange && clientSentEOF && x.pointee.upstreamReady && !x.pointee.machine.requestComplete { abort() }
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
        exchange.x = exchangeStates.take(headLimits: settings.headLimits)
        exchange.hasState = true
    }

    private func recycleExchangeState(idle: Bool) {
        guard hasState else { return }
        let pool = exchangeStates
        pool.recycle(x, idle: idle)
        exchange.x = pool.detached
        exchange.hasState = false
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
                    if exchange.listener.tls != nil && exchange.tls == nil {
                        // The TLS stream found plain HTTP where its handshake should be.
                        return rejectRequest(HTTPParseError(status: 400, reason: "The plain HTTP request was sent to an HTTPS port; use https:// here"))
                    }
                    if input[0] == 0x16 && exchange.listener.tls == nil {
                        // A TLS record (handshake) where a request line should start: the client
                        // speaks https:// to a cleartext port. Say so now rather than waiting
                        // out client_header_ms for a line end that never comes.
                        server.noteTLSOnCleartextListener(from: exchange.peerIP)
                        return rejectRequest(HTTPParseError(status: 400, reason: "a TLS handshake arrived on a cleartext (http://) listener"))
                    }
                }
                // Swaps buffers with the previous request: no allocation per request in steady state.
                do {
                    guard try x.pointee.requestHeadBytes.take(from: &input, completingInto: &x.pointee.request.bytes) else { return }
                } catch {
                    return rejectRequest(error)
                }
                do { try HeadParser.parseRequest(into: &x.pointee.request, limits: settings.headLimits) } catch {
                    return rejectRequest(error)
                }
                if x.pointee.request.framing != .none && !input.isEmpty {
                    // Body bytes wait in `pending` until the upstream is ready, then go out in
                    // one write behind the head (a pooled upstream is ready within `begin()`).
                    x.pointee.pending.append(raw: input)
                    input = UnsafeRawBufferPointer(start: nil, count: 0)
                }
                beginExchange()
                // What follows a body-less request's head in this read is the next request:
                // processed below, or held in `pending` while the exchange runs.
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
            // `exchangeEnded` closes once nothing is left. Only a body that can no longer
            // complete ends the exchange now (all received bytes were relayed already).
            if x.pointee.upstreamReady && !x.pointee.machine.requestComplete { abort() }
        case .closing:
            if shutdownDone { teardown() }
        case .tunnel, .closed:
            break  // a tunnel's ends are handled above
        }
    }

    // MARK: - Prior-knowledge HTTP/2 (h2c)

    /// The connection's first bytes are still being compared with the HTTP/2 preface (cleartext
    /// listeners with `http2.h2c`).
    private var probingForH2C = false
    /// The first bytes while they are a proper prefix of the preface (it came in pieces).
    private var h2cProbe: [UInt8] = []

    /// An HTTP/1 request goes on as one; the 24-byte HTTP/2 preface hands the client over to an
    /// `HTTP2ServerConnection` (with everything read so far). Only the first bytes are looked at;
    /// a request line never begins like the preface (`PRI` is no method anyone sends).
    private func probeForH2C(_ bytes: UnsafeRawBufferPointer) {
        let preface = HTTP2FrameCodec.preface
        if h2cProbe.isEmpty {
            let n = min(bytes.count, preface.count)
            guard bytes.prefix(n).elementsEqual(preface.prefix(n)) else {
                probingForH2C = false
                return clientRead(bytes)
            }
            if bytes.count >= preface.count { return switchToHTTP2(bytes) }
            h2cProbe = Array(bytes)
            return
        }
        h2cProbe.append(contentsOf: bytes)
        let n = min(h2cProbe.count, preface.count)
        guard h2cProbe.prefix(n).elementsEqual(preface.prefix(n)) else {
            probingForH2C = false
            let buffered = h2cProbe
            h2cProbe = []
            return buffered.withUnsafeBytes { clientRead($0) }
        }
        if h2cProbe.count >= preface.count {
            let buffered = h2cProbe
            h2cProbe = []
            buffered.withUnsafeBytes { switchToHTTP2($0) }
        }
    }

    /// Gives the client stream to an HTTP/2 connection; this one is done (it held no exchange
    /// state yet: nothing before the preface was a request).
    private func switchToHTTP2(_ initial: UnsafeRawBufferPointer) {
        probingForH2C = false
        phase = .closed
        disarm()
        timer.close()
        server.switchToHTTP2(from: self, client: client, listener: exchange.listener, isAdminListener: isAdminListener, initial: initial)
    }

    // MARK: - Handing requests to the exchange

    /// A complete request head was parsed: set up its body's framing and start the exchange.
    private func beginExchange() {
        phase = .exchange
        disarm()
        switch x.pointee.request.framing {
        case .contentLength(let n): x.pointee.requestBodyRemaining = n
        case .chunked: x.pointee.requestDecoder.reset()
        case .none, .untilClose: break
        }
        x.pointee.requestBodyBytes = 0
        if exchange.settings !== settings { exchange.settings = settings }
        exchange.begin()
    }

    /// Forwards request body bytes to the exchange, the client's framing removed; returns how
    /// many of `input` belonged to the body.
    private func relayRequestBody(_ input: UnsafeRawBufferPointer) -> Int {
        switch x.pointee.request.framing {
        case .contentLength:
            let take = Int(min(UInt64(input.count), x.pointee.requestBodyRemaining))
            x.pointee.requestBodyRemaining -= UInt64(take)
            exchange.sendRequestBody(UnsafeRawBufferPointer(rebasing: input[..<take]))
            if x.pointee.requestBodyRemaining == 0 { exchange.endRequestBody() }
            return take
        case .chunked:
            let consumed: Int
            do {
                let maxBody = x.pointee.maxBodyBytes
                consumed = try x.pointee.requestDecoder.decode(input) { data throws(HTTPParseError) in
                    x.pointee.requestBodyBytes += UInt64(data.count)
                    if maxBody > 0 && x.pointee.requestBodyBytes > maxBody {
                        throw HTTPParseError(status: 413, reason: "the chunked body grew past \(maxBody) bytes")
                    }
                    exchange.sendRequestBody(data)
                }
            } catch {
                // Part of the request may be upstream already: that connection is spoiled.
                exchange.requestBodyFailed()
                rejectRequest(error)
                return input.count
            }
            if x.pointee.requestDecoder.isComplete {
                exchange.endRequestBody()
            } else {
                exchange.flushRequestBody()
            }
            return consumed
        case .none, .untilClose:
            exchange.endRequestBody()
            return 0
        }
    }

    var clientLocalAddress: SocketAddress? { client.localAddress }

    // MARK: - ExchangeDownstream: the request side

    func upstreamReadyForBody() {
        guard hasPending else {
            // Half-closed before any body byte: the body can never come.
            if clientSentEOF && !x.pointee.machine.requestComplete { abort() }
            return
        }
        // Body bytes that arrived before the connection: they go out behind the head.
        var buffered = takePending()
        client.resumeReading(.pipelined)
        buffered.withUnsafeBytes { raw in
            handleClientBytes(raw)
        }
        givePendingStorageBack(&buffered)
    }

    func pauseRequestBody() { client.pauseReading(.backpressure) }
    func resumeRequestBody() { client.resumeReading(.backpressure) }
    var lastRequestActivity: UInt64 { lastClientActivity }

    // MARK: - ExchangeDownstream: the response, written as HTTP/1.1

    func sendInterimResponse(_ head: ResponseHead) {
        x.pointee.toClient.removeAll()
        x.pointee.rewriter.writeInterimResponse(head, into: &x.pointee.toClient)
        flushToClient()
    }

    /// Chooses the client's framing: the backend's length when it gave one; otherwise chunked for
    /// HTTP/1.1 and close-delimited for HTTP/1.0 (the exchange closes after it). The head is kept
    /// back in `toClient` until body bytes or a flush follow.
    func sendResponseHead(_ head: inout ResponseHead, framing: BodyFraming, closeAfter: Bool) {
        switch framing {
        case .none: clientFraming = .none
        case .contentLength(let n): clientFraming = .contentLength(n)
        case .chunked, .untilClose: clientFraming = x.pointee.request.versionMinor == 1 ? .chunked : .untilClose
        }
        x.pointee.toClient.removeAll()
        x.pointee.rewriter.writeClientResponse(&head, framing: clientFraming, clientVersionMinor: x.pointee.request.versionMinor,
                                               closeAfter: closeAfter, requestID: x.pointee.requestID,
                                               addedField: hstsField, policy: exchange.responsePolicy, into: &x.pointee.toClient)
    }

    func sendResponseBody(_ data: UnsafeRawBufferPointer) {
        if clientFraming == .chunked {
            appendChunk(data)
            flushToClient()
        } else {
            flushToClient(extra: data)
        }
    }

    func appendResponseBody(_ data: UnsafeRawBufferPointer) {
        if clientFraming == .chunked { appendChunk(data) } else { x.pointee.toClient.append(raw: data) }
    }

    @inline(__always)
    private func appendChunk(_ data: UnsafeRawBufferPointer) {
        x.pointee.toClient.appendHex(data.count)
        x.pointee.toClient.append("\r\n")
        x.pointee.toClient.append(raw: data)
        x.pointee.toClient.append("\r\n")
    }

    func flushResponse() { flushToClient() }

    func endResponse() {
        if clientFraming == .chunked { x.pointee.toClient.append("0\r\n\r\n") }
        flushToClient()
    }

    func discardBufferedResponse() { x.pointee.toClient.removeAll() }

    func sendLocalReply(_ reply: LocalReply, keepAlive: Bool) {
        x.pointee.toClient.removeAll()
        HTTP1LocalReplyWriter.write(reply, keepAlive: keepAlive, headOnly: x.pointee.request.isHEAD,
                                    requestID: x.pointee.requestID, addedField: hstsField, into: &x.pointee.toClient)
        flushToClient()
    }

    var isResponseCongested: Bool { client.isCongested }
    var responseBytesSent: UInt64 { client.bytesWritten &- x.pointee.bytesSentAtStart }

    private func flushToClient(extra: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        if x.pointee.toClient.isEmpty && extra.isEmpty { return }
        x.pointee.toClient.withUnsafeBytes { head in client.write(head, extra) }
        x.pointee.toClient.removeAll()
    }

    // MARK: - ExchangeDownstream: verdicts and the end of an exchange

    /// Rejects a malformed request with its status and reason, then closes — after reading
    /// what the client still sends for a moment, so the status reaches it instead of a reset.
    func rejectRequest(_ error: HTTPParseError) {
        if !x.pointee.exchangeOpen { exchange.beginAccounting(parsed: false) }  // refused before its head was parsed
        exchange.releaseUpstream(reusable: false)
        if x.pointee.machine.responseStarted { return abort() }  // too late to refuse: the client sees a cut response
        server.stats.add(WorkerStats.rejectionIndex(error.status))
        x.pointee.responseStatus = error.status
        // No X-Request-Id: the head may not have been read far enough to have one.
        // Some parser errors already begin with the reason phrase: it is not said twice.
        let phrase = StatusText.reason(error.status)
        let text = error.reason.hasPrefix(phrase) ? error.reason : "\(phrase): \(error.reason)"
        x.pointee.toClient.removeAll()
        HTTP1LocalReplyWriter.write(.text(error.status, text), keepAlive: false, headOnly: false, requestID: [],
                                    addedField: hstsField, into: &x.pointee.toClient)
        flushToClient()
        exchange.abandon()
        countTraffic()
        closeGracefully()
    }

    func cutResponse() { abort() }

    /// The backend accepted the protocol switch: relay its 101, then join the two connections.
    /// `rest` holds what the backend sent right after its head (the new protocol's first bytes).
    func switchProtocols(_ head: ResponseHead, upstream conn: UpstreamConnection, rest: UnsafeRawBufferPointer) {
        disarm()
        x.pointee.toClient.removeAll()
        x.pointee.rewriter.writeSwitchingProtocols(head, into: &x.pointee.toClient)
        flushToClient()
        phase = .tunnel
        server.tunnelOpened()
        let early = x.pointee.pending
        x.pointee.pending = []
        client.resumeReading(.pipelined)
        startTunnel(upstream: conn, stream: conn.stream, fromClient: early, fromUpstream: rest)
    }

    /// Joins the client to `stream` (the upstream's, its type opened from the existential).
    private func startTunnel<Upstream: ByteStream>(upstream conn: UpstreamConnection, stream: Upstream,
                                                   fromClient early: [UInt8], fromUpstream rest: UnsafeRawBufferPointer) {
        let tunnel = Tunnel(loop: server.loop, client: client, upstream: stream,
                            idleLimitMs: settings.config.timeouts.tunnelIdleMs) { [unowned self] in self.teardown() }
        self.tunnel = tunnel
        // The tunnel hears the upstream from now on; the exchange closes it at teardown.
        conn.owner = tunnel
        tunnel.start(fromClient: early, fromUpstream: rest)
        if clientSentEOF { tunnel.clientEnded(UVError.eof) }
    }

    /// The exchange is over: wait for the next request, or close.
    func exchangeEnded() {
        countTraffic()
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

    // MARK: - Closing

    /// Half-closes after the queued output, discards input for a moment, then closes.
    private func closeGracefully() {
        guard phase != .closing && phase != .closed else { return }
        phase = .closing
        exchange.releaseUpstream(reusable: false)
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
        // A tunnel's exchange, or one cut short (499 if no response had begun), is counted now;
        // the upstream (a tunnel's too) is closed. This can run from inside the exchange
        // (`cutResponse`): the connection stays alive to the end of it, held by its client
        // stream's and timer's callbacks until their handles have closed (a later loop turn).
        exchange.abandon()
        countTraffic()
        recycleExchangeState(idle: false)
        disarm()
        timer.close()
        client.close()
        server.clientClosed(self)
    }

    private func countTraffic() { traffic.count(client, into: server.stats) }

    // MARK: - Timers

    func armExchangeDeadline(inMs ms: UInt64) {
        timerPurpose = .exchange
        setDeadline(in: max(ms, 1))
    }

    func advanceExchangeDeadline(inMs ms: UInt64) {
        if timerPurpose == .exchange && server.loop.now + ms < deadline { setDeadline(in: ms) }
    }

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
        case .exchange:
            // The exchange re-arms (`armExchangeDeadline`) if it still needs one.
            timerPurpose = .none
            exchange.deadlineReached()
        case .flush, .linger:
            timerPurpose = .none
            teardown()
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
