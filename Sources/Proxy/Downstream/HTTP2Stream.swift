/// One HTTP/2 stream of an `HTTP2ServerConnection`: one request and its response, run by its own
/// `ProxyExchange` — to an HTTP/1.1 backend, or answered by the proxy itself — for which it is
/// the `ExchangeDownstream`. It turns the request's header fields into the exchange's request
/// head (`HTTP2RequestHeadBuilder`), passes DATA on as body bytes, and gives the response back to
/// the connection's codec as a HEADERS frame and DATA pulled from `responseBody`.
///
/// Flow control is backpressure both ways:
/// - request body: bytes are handed to `codec.consume` (which reopens the client's window) only
///   once the exchange wrote them to the backend; bytes that arrive while the backend is not
///   ready or not reading wait in `x.pending`, bounded by the stream window;
/// - response body: the exchange stops reading its backend while `responseBody` holds more than
///   `responseBufferLimit` unsent bytes (`isResponseCongested`), and is told to go on once the
///   codec took them (`responseSinkDrained`), so one slow stream never stalls the others.
///
/// Lifetime: owned by the connection's stream table from when the client opens the stream until
/// nghttp2 reports it closed, then kept by the connection for its next stream (`open` starts it
/// over: an HTTP/2 request costs no new stream, exchange or timer object, and no buffer that a
/// previous request already grew). The `ExchangeState` is held from the end of the request's
/// header block until the exchange ends. Threading: loop thread only.
final class HTTP2Stream: ExchangeDownstream {
    var clientLocalAddress: SocketAddress? { connection.client.localAddress }

    private(set) var id: Int32 = 0
    /// The connection that owns this stream (which outlives it: it tears its streams down first).
    unowned(unsafe) let connection: HTTP2ServerConnection
    let exchange: ProxyExchange<HTTP2Stream>
    var builder = HTTP2RequestHeadBuilder()
    /// RFC 9113 §6.5.2 size of the header and trailer lists decoded so far (`codecField`).
    var headerListBytes = 0
    private var settings: ServerSettings

    private var x: UnsafeMutablePointer<ExchangeState> { exchange.x }

    /// The request's END_STREAM arrived.
    private(set) var requestEnded = false
    /// The exchange was started (header block complete and accepted).
    private(set) var began = false
    /// Counted in the connection's active streams (header block complete, not closed yet).
    var isActive = false
    /// When nghttp2 last took response body bytes (the client's window let them out): a
    /// stream whose client keeps its window shut is cut after `response_idle_ms` of that.
    private var lastBodyTakenAt: UInt64 = 0
    /// The exchange paused the request body (its backend is not reading).
    private var bodyPaused = false
    /// Request body bytes received and not yet given back to the client's window.
    private var unconsumed = 0
    private var lastActivity: UInt64 = 0
    /// When the client opened the stream: the request's clock starts there.
    private var startNs: UInt64 = 0

    // The response.
    private var headSubmitted = false
    /// A final head kept back until body bytes, a flush or the end follow (the exchange may still
    /// replace it with an error: `discardBufferedResponse`).
    private var pendingStatus: UInt16 = 0
    private var pendingFields = HTTP2FieldList()
    private var pendingHasBody = false
    private var responseBody: [UInt8] = []
    private var responseBodyOffset = 0
    private var responseEnded = false
    /// nghttp2 was told there is nothing to send yet: `resumeBody` when there is.
    private var bodyDeferred = false
    /// Response body bytes handed to the stream (the access log's `bytes_sent`: the body, as
    /// nginx's `$body_bytes_sent`; HPACK-compressed heads have no meaningful size of their own).
    private var bodyBytesSent: UInt64 = 0
    /// The exchange ended (its state went back to the pool).
    private(set) var exchangeFinished = false

    /// Unsent response bytes a stream holds before its backend is no longer read.
    static let responseBufferLimit = 64 * 1024

    private var timer: Timer?
    private var deadline: UInt64 = 0

    init(connection: HTTP2ServerConnection, settings: ServerSettings) {
        self.connection = connection
        self.settings = settings
        let server = connection.server
        exchange = ProxyExchange(server: server, settings: settings, detached: server.exchangeStates.detached,
                                 peerAddress: connection.peerAddress, isAdminListener: connection.isAdminListener,
                                 listener: connection.listener, tls: connection.tls)
        exchange.setDownstream(self)
    }

    /// Starts the stream over for a new request on stream `id` (a fresh object, or one the
    /// connection kept from an earlier stream).
    func open(id: Int32, settings: ServerSettings) {
        self.id = id
        self.settings = settings
        builder.reset()
        headerListBytes = 0
        requestEnded = false
        began = false
        bodyPaused = false
        unconsumed = 0
        lastActivity = connection.server.loop.now
        startNs = Platform.monotonicNanos()
        headSubmitted = false
        pendingStatus = 0
        pendingHasBody = false
        pendingFields.removeAll()
        if responseBody.capacity > Self.responseBufferLimit { responseBody = [] } else { responseBody.removeAll(keepingCapacity: true) }
        responseBodyOffset = 0
        responseEnded = false
        bodyDeferred = false
        bodyBytesSent = 0
        exchangeFinished = false
        deadline = 0
        isActive = false
        lastBodyTakenAt = lastActivity
    }

    /// The connection is done with this object for good (it closes, or keeps enough spares).
    func dispose() {
        timer?.close()
        timer = nil
    }

    // MARK: - From the connection (codec events)

    /// The header block ended: build the request head and start the exchange.
    func headersComplete(endStream: Bool) {
        let server = connection.server
        requestEnded = endStream
        exchange.x = server.exchangeStates.take(headLimits: settings.headLimits)
        exchange.hasState = true
        x.pointee.requestStartNs = startNs
        x.pointee.bytesSentAtStart = 0
        do {
            try builder.build(into: &x.pointee.request, hasBody: !endStream, limits: settings.headLimits)
        } catch {
            if error.status == 431 { connection.noteGlitch() }
            began = true
            return rejectRequest(error)
        }
        builder.reset()
        began = true
        switch x.pointee.request.framing {
        case .contentLength(let n): x.pointee.requestBodyRemaining = n
        case .chunked, .none, .untilClose: break
        }
        x.pointee.requestBodyBytes = 0
        exchange.settings = settings
        exchange.begin()
    }

    /// Request body bytes (DATA payload).
    func receiveBody(_ data: UnsafeRawBufferPointer) {
        lastActivity = connection.server.loop.now
        unconsumed += data.count
        guard began, exchange.isRunning, exchange.hasState, !x.pointee.machine.requestComplete else {
            // Nobody wants them (answered already, refused): the window reopens at once.
            return consumeAll()
        }
        let maxBody = x.pointee.maxBodyBytes
        x.pointee.requestBodyBytes += UInt64(data.count)
        if maxBody > 0 && x.pointee.requestBodyBytes > maxBody {
            exchange.requestBodyFailed()
            return rejectRequest(HTTPParseError(status: 413, reason: "the body grew past \(maxBody) bytes"))
        }
        if !x.pointee.upstreamReady || bodyPaused || !x.pointee.pending.isEmpty {
            x.pointee.pending.append(raw: data)
            return
        }
        forward(data)
    }

    /// END_STREAM after the body (or trailers).
    func requestBodyEnded() {
        requestEnded = true
        guard began, exchange.isRunning, exchange.hasState, !x.pointee.machine.requestComplete else { return }
        if x.pointee.upstreamReady && !bodyPaused && x.pointee.pending.isEmpty { exchange.endRequestBody() }
    }

    /// Body bytes to the exchange, which writes them to the backend: they leave the client's window.
    private func forward(_ data: UnsafeRawBufferPointer) {
        exchange.sendRequestBody(data)
        exchange.flushRequestBody()
        consume(data.count)
    }

    private func consume(_ n: Int) {
        let n = min(n, unconsumed)
        guard n > 0 else { return }
        unconsumed -= n
        connection.consume(id, n)
    }

    private func consumeAll() { consume(unconsumed) }

    /// Delivers body bytes held while the backend was not ready or not reading (from the
    /// connection's batch, never from inside an exchange call), and the body's end.
    func deliverPendingBody() {
        guard began, exchange.isRunning, exchange.hasState, x.pointee.upstreamReady, !bodyPaused else { return }
        if !x.pointee.pending.isEmpty {
            var buffered: [UInt8] = []
            swap(&buffered, &x.pointee.pending)
            buffered.withUnsafeBytes { forward($0) }
            guard exchange.hasState else { return }
            buffered.removeAll(keepingCapacity: true)
            if x.pointee.pending.isEmpty { swap(&buffered, &x.pointee.pending) }
        }
        if requestEnded && x.pointee.pending.isEmpty && !x.pointee.machine.requestComplete && exchange.isRunning {
            exchange.endRequestBody()
        }
    }

    /// nghttp2 closed the stream (`errorCode` 0: after both ends; else a reset by either side).
    func closed(errorCode: UInt32) {
        if began && !exchangeFinished && exchange.isRunning {
            // The client went away mid-exchange (or the proxy reset the stream): the backend
            // connection is closed, the exchange counted (499 if nothing was answered).
            exchange.abandon()
        }
        finishExchange()
        disarm()
        // Whatever the stream still held of the request body goes back to the connection's
        // window (nghttp2 does not return it when a stream closes).
        consumeAll()
        if responseBody.capacity > Self.responseBufferLimit { responseBody = [] }
    }

    /// nghttp2 could not send this stream's response head: the stream ends (RST_STREAM).
    func responseFailed() {
        connection.resetStream(id, errorCode: HTTP2FrameCodec.internalError)
        if exchange.hasState && exchange.isRunning { exchange.abandon() }
        finishExchange()
    }

    // MARK: - ExchangeDownstream: the request side

    func upstreamReadyForBody() {
        // Called from inside the exchange (its upstream just connected): it expects the body
        // bytes that waited to go out behind the head now.
        guard !x.pointee.pending.isEmpty || requestEnded else { return }
        deliverPendingBody()
    }

    func pauseRequestBody() { bodyPaused = true }

    func resumeRequestBody() {
        bodyPaused = false
        if !x.pointee.pending.isEmpty || requestEnded { connection.scheduleBodyDelivery(self) }
    }

    var lastRequestActivity: UInt64 { lastActivity }

    func rejectRequest(_ error: HTTPParseError) {
        if !x.pointee.exchangeOpen { exchange.beginAccounting(parsed: false) }
        exchange.releaseUpstream(reusable: false)
        if headSubmitted { return cutResponse() }
        connection.server.stats.add(WorkerStats.rejectionIndex(error.status))
        x.pointee.responseStatus = error.status
        let phrase = StatusText.reason(error.status)
        let text = error.reason.hasPrefix(phrase) ? error.reason : "\(phrase): \(error.reason)"
        submitLocalReply(.text(error.status, text), headOnly: x.pointee.requestParsed && x.pointee.request.isHEAD)
        exchange.abandon()
        finishExchange()
        consumeAll()
    }

    func cutResponse() {
        connection.resetStream(id, errorCode: HTTP2FrameCodec.internalError)
        exchange.abandon()
        finishExchange()
    }

    func switchProtocols(_ head: ResponseHead, upstream: UpstreamConnection, rest: UnsafeRawBufferPointer) {
        // HTTP/2 requests cannot ask for a switch (no Connection field): never asked, never relayed.
        cutResponse()
    }

    func exchangeEnded() { finishExchange() }

    /// Gives the exchange state back once the exchange is over; the response body, if any is
    /// still unsent, stays here until the codec has taken it.
    private func finishExchange() {
        guard exchange.hasState else { return }
        exchangeFinished = true
        disarm()
        let pool = connection.server.exchangeStates
        pool.recycle(x, idle: false)
        exchange.x = pool.detached
        exchange.hasState = false
        // Body bytes held for the backend are dropped with the state: their window reopens.
        consumeAll()
        // A response still being sent keeps a send deadline (the client must open its window).
        if responseBody.count > responseBodyOffset { setDeadline(in: UInt64(max(settings.config.timeouts.responseIdleMs, 1))) }
        connection.exchangeFinished(self)
    }

    // MARK: - ExchangeDownstream: the response, as HEADERS and DATA

    func sendInterimResponse(_ head: ResponseHead) {
        var list = HTTP2FieldList()
        x.pointee.rewriter.collectHTTP2ResponseFields(head, interim: true, requestID: [], hsts: nil, into: &list)
        connection.submitInterim(id, status: head.status, fields: list)
    }

    func sendResponseHead(_ head: inout ResponseHead, framing: BodyFraming, closeAfter: Bool) {
        pendingFields.removeAll()
        x.pointee.rewriter.collectHTTP2ResponseFields(head, interim: false, requestID: x.pointee.requestID,
                                                      hsts: connection.listener.hstsValue.flatMap { connection.tls != nil ? $0 : nil },
                                                      policy: exchange.responsePolicy, into: &pendingFields)
        pendingStatus = head.status
        switch framing {
        case .none, .contentLength(0): pendingHasBody = false
        default: pendingHasBody = true
        }
    }

    func sendResponseBody(_ data: UnsafeRawBufferPointer) {
        appendResponseBody(data)
        flushResponse()
    }

    func appendResponseBody(_ data: UnsafeRawBufferPointer) {
        responseBody.append(raw: data)
        bodyBytesSent += UInt64(data.count)
    }

    func flushResponse() {
        submitPendingHead()
        wakeBody()
    }

    func endResponse() {
        responseEnded = true
        submitPendingHead()
        wakeBody()
    }

    func discardBufferedResponse() {
        if !headSubmitted { pendingStatus = 0 }
        bodyBytesSent &-= UInt64(responseBody.count - responseBodyOffset)
        responseBody.removeAll(keepingCapacity: true)
        responseBodyOffset = 0
    }

    func sendLocalReply(_ reply: LocalReply, keepAlive: Bool) {
        submitLocalReply(reply, headOnly: x.pointee.request.isHEAD)
    }

    var isResponseCongested: Bool {
        responseBody.count - responseBodyOffset >= Self.responseBufferLimit
    }

    var responseBytesSent: UInt64 { bodyBytesSent }

    private func submitPendingHead() {
        guard !headSubmitted, pendingStatus != 0 else { return }
        headSubmitted = true
        let hasBody = pendingHasBody || responseBody.count > responseBodyOffset
        if !hasBody { responseEnded = true }
        if !connection.submitResponse(id, status: pendingStatus, fields: pendingFields, hasBody: hasBody) {
            connection.resetStream(id, errorCode: HTTP2FrameCodec.internalError)
        }
    }

    private func submitLocalReply(_ reply: LocalReply, headOnly: Bool) {
        guard !headSubmitted else { return }
        pendingFields.removeAll()
        pendingFields.append(name: "server", value: Array("swift-proxy".utf8))
        pendingFields.append(name: "content-type", value: Array(UnsafeBufferPointer(start: reply.contentType.utf8Start,
                                                                                    count: reply.contentType.utf8CodeUnitCount)))
        pendingFields.append(name: "content-length", value: String(reply.body.count))
        pendingFields.append(name: "cache-control", value: Array("no-store".utf8))
        for field in reply.fields {
            let name = [UInt8](UnsafeBufferPointer(start: field.name.utf8Start, count: field.name.utf8CodeUnitCount))
            pendingFields.append(lowercasedName: name, 0..<name.count, value: Array(field.value.utf8), 0..<field.value.utf8.count)
        }
        if exchange.hasState && !x.pointee.requestID.isEmpty { pendingFields.append(name: "x-request-id", value: x.pointee.requestID, neverIndexed: true) }
        if connection.tls != nil, let hsts = connection.listener.hstsValue { pendingFields.append(name: "strict-transport-security", value: hsts) }
        pendingStatus = reply.status
        responseBody.removeAll(keepingCapacity: true)
        responseBodyOffset = 0
        if !headOnly {
            responseBody.append(contentsOf: reply.body)
            bodyBytesSent += UInt64(reply.body.count)
        }
        pendingHasBody = !responseBody.isEmpty
        responseEnded = true
        submitPendingHead()
    }

    /// Tells nghttp2 there is body to send (or its end), if it was waiting.
    private func wakeBody() {
        guard headSubmitted, bodyDeferred else { return }
        bodyDeferred = false
        connection.resumeBody(id)
    }

    /// The codec asks for DATA: up to `buffer.count` bytes of the response body.
    func takeResponseBody(into buffer: UnsafeMutableRawBufferPointer) -> (count: Int, end: Bool)? {
        let available = responseBody.count - responseBodyOffset
        if available == 0 {
            if responseEnded { return (0, true) }
            bodyDeferred = true
            return nil
        }
        let n = min(available, buffer.count)
        responseBody.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + responseBodyOffset, byteCount: n)
        }
        responseBodyOffset += n
        // Progress for the send timeout: a real read (1 KiB or the rest), not a window opened a
        // byte at a time to keep a stream (and its backend connection) alive.
        if n >= 1024 || responseEnded && responseBody.count == responseBodyOffset { lastBodyTakenAt = connection.server.loop.now }
        if responseBodyOffset == responseBody.count {
            responseBody.removeAll(keepingCapacity: responseBody.capacity <= 2 * Self.responseBufferLimit)
            responseBodyOffset = 0
        } else if responseBodyOffset >= Self.responseBufferLimit {
            // Sent bytes are dropped from the front: the buffer holds at most the unsent limit
            // and one backend read, however long the response.
            responseBody.removeFirst(responseBodyOffset)
            responseBodyOffset = 0
        }
        let end = responseEnded && responseBody.count == responseBodyOffset
        // The exchange stopped reading its backend for this stream's client: go on once there is room.
        if exchange.hasState && x.pointee.upstreamReadPaused && !isResponseCongested { exchange.responseSinkDrained() }
        return (n, end)
    }

    // MARK: - The exchange's deadline (one timer per stream, made when first needed)

    func armExchangeDeadline(inMs ms: UInt64) {
        setDeadline(in: max(ms, 1))
    }

    func advanceExchangeDeadline(inMs ms: UInt64) {
        if deadline != 0 && connection.server.loop.now + ms < deadline { setDeadline(in: ms) }
    }

    private func setDeadline(in ms: UInt64) {
        deadline = connection.server.loop.now + ms
        if timer == nil {
            let t = Timer(loop: connection.server.loop)
            t.onFire = { [unowned self] in self.timerFired() }
            timer = t
        }
        timer!.start(timeoutMs: ms)
    }

    private func disarm() {
        deadline = 0
        timer?.stop()
    }

    private func timerFired() {
        guard deadline != 0 else { return }
        let now = connection.server.loop.now
        if now < deadline { return setDeadline(in: deadline - now) }
        deadline = 0
        // A client that keeps its window shut on a stream with unsent bytes: the send timeout.
        let sendLimit = UInt64(max(settings.config.timeouts.responseIdleMs, 1))
        if responseBody.count > responseBodyOffset && now &- lastBodyTakenAt >= sendLimit {
            connection.resetStream(id, errorCode: HTTP2FrameCodec.cancel)
            if exchange.hasState && exchange.isRunning { exchange.abandon() }
            finishExchange()
            return
        }
        if exchange.hasState && exchange.isRunning {
            exchange.deadlineReached()
        } else if responseBody.count > responseBodyOffset {
            setDeadline(in: sendLimit - (now &- lastBodyTakenAt))
        }
        connection.scheduleFlush()
    }
}
