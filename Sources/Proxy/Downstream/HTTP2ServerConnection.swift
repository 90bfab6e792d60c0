/// One HTTP/2 client connection (ALPN `h2` after a TLS handshake, or prior-knowledge h2c on a
/// cleartext listener): nghttp2 (`HTTP2FrameCodec`) reads and writes the frames; this type owns
/// the rest — the stream table (each stream an `HTTP2Stream` running its own exchange), when to
/// read and when to write, the idle deadline, drain with GOAWAY, and the defences against
/// clients that abuse the protocol.
///
/// Output is batched: whatever streams and frames produce during one loop iteration is written
/// once, at the start of the next (`ProxyServer.scheduleHTTP2Flush`, a libuv idle handle). While
/// the client does not read (its stream is congested) nothing more is taken from nghttp2 and the
/// client's input is paused too, so a client cannot make the proxy queue answers without bound:
/// every stream then stops at its response buffer limit and stops reading its backend.
///
/// Abuse ends a connection with GOAWAY ENHANCE_YOUR_CALM once it caused `http2.max_glitches`
/// "glitches": streams it resets while their exchange runs (Rapid Reset), frames and header
/// blocks nghttp2 had to refuse (each makes the proxy reset a stream: MadeYouReset), oversized
/// header lists, and control frames beyond `http2.max_control_frames_per_s`. nghttp2 itself
/// ends SETTINGS/PING floods (`max_queued_control_frames`), over-long CONTINUATION chains and
/// RST_STREAM rates beyond `reset_burst`/`resets_per_s`.
///
/// Lifetime: held by the server's client table until it closes, and by its client stream's
/// callbacks (a cycle broken when the stream closes). Threading: loop thread only.
final class HTTP2ServerConnection: HTTP2FrameCodecDelegate, DownstreamConnectionControl {
    let server: ProxyServer
    let client: any ByteStream
    let isAdminListener: Bool
    let listener: ListenerRole
    let tls: TLSSessionFacts?
    let peerAddress: SocketAddress?
    private var codec: HTTP2FrameCodec!
    private var streams = HTTP2StreamTable<HTTP2Stream>()
    /// Streams whose header block is complete and that are not closed yet: while there is one,
    /// the connection is busy (no idle deadline).
    private var activeStreams = 0
    /// Streams kept for the next ones (`HTTP2Stream.open`), at most `maxSpareStreams`.
    private var spareStreams: [HTTP2Stream] = []
    /// The stream the last codec event was for: a request's fields, its DATA frames and the
    /// body reads of its response come in runs for one stream, so most lookups skip the table.
    private var cachedID: Int32 = 0
    private var cachedStream: HTTP2Stream?
    private let limits: HTTP2Config
    private let timer: Timer

    private enum Phase { case open, closing, closed }
    private var phase = Phase.open
    /// A GOAWAY went out for a drain: the connection closes once its streams are done.
    private var draining = false
    private var drainLastStreamID: Int32 = .max

    /// A flush is scheduled with the server (`flushNow` runs at the next loop iteration).
    private var flushScheduled = false
    /// Streams whose held request body can go out now (delivered during the flush).
    private var bodyDeliveries: [HTTP2Stream] = []

    private var glitches = 0
    /// Glitches halve every `glitchHalfLifeMs`: the limit is on a rate, so a long-lived browser
    /// connection that cancels a stream now and then is never ended for it.
    private var glitchesHalvedAt: UInt64 = 0
    private static let glitchHalfLifeMs: UInt64 = 60_000
    private var controlFrames = 0
    private var controlWindowStart: UInt64 = 0
    private var reportedAbuse = false

    /// Client traffic already added to the worker's byte counters.
    private var traffic = ClientTraffic()

    init(server: ProxyServer, client: any ByteStream, isAdminListener: Bool, listener: ListenerRole, tls: TLSSessionFacts?) {
        self.server = server
        self.client = client
        self.isAdminListener = isAdminListener
        self.listener = listener
        self.tls = tls
        peerAddress = client.peerAddress
        limits = server.settings.config.http2
        timer = Timer(loop: server.loop)
        codec = HTTP2FrameCodec(delegate: self, limits: HTTP2SessionLimits(
            maxConcurrentStreams: UInt32(limits.maxConcurrentStreams), initialStreamWindow: UInt32(limits.streamWindowBytes),
            connectionWindow: UInt32(limits.connectionWindowBytes), maxHeaderListBytes: UInt32(limits.maxHeaderListBytes),
            resetBurst: UInt64(limits.resetBurst), resetsPerSecond: UInt64(limits.resetsPerSecond),
            maxContinuations: limits.maxContinuationFrames, maxOutboundAcks: limits.maxQueuedControlFrames))
    }

    /// Starts reading; `initial` holds bytes already read from the client (an h2c preface the
    /// HTTP/1 connection recognised, and whatever came with it).
    func start(initial: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        server.stats.add(WorkerStats.http2Connections)
        server.http2ConnectionOpened()
        client.setNoDelay()
        client.onRead = { [self] bytes in clientRead(bytes) }
        client.onReadEnd = { [self] code in clientEnded(code) }
        client.onWriteError = { [self] _ in teardown() }
        client.onDrain = { [self] in scheduleFlush() }
        timer.onFire = { [self] in timerFired() }
        armIdle()
        if !initial.isEmpty { clientRead(initial) }
        scheduleFlush()  // the server's SETTINGS
        client.startReading()
        // An h2c connection that began (from HTTP/1) while the server drains is drained too.
        if server.isDraining { closeIfIdle() }
    }

    /// The client's end of input. After an orderly FIN, streams already sent finish (a client
    /// may half-close once it sent its requests); a reset ends everything.
    private func clientEnded(_ code: Int32) {
        guard code == UVError.eof, activeStreams > 0, phase == .open else { return teardown() }
        draining = true
        drainLastStreamID = codec.lastStreamID
        scheduleFlush()
    }

    // MARK: - Input

    private func clientRead(_ bytes: UnsafeRawBufferPointer) {
        guard phase == .open else { return }
        if !codec.receive(bytes) {
            // Fatal (a flood, too many CONTINUATION frames, a bad preface): nghttp2 sends nothing
            // more, so the GOAWAY saying why is written here — after whole frames only: what was
            // taken from nghttp2 before has all been written — and the connection closes.
            if codec.failureIsAbuse { reportAbuse(codec.failure ?? "HTTP/2 flood") }
            client.write(codec.fatalGoAwayFrame)
            return closeAfterOutput()
        }
        scheduleFlush()
    }

    // MARK: - Output

    func scheduleFlush() {
        guard !flushScheduled, phase != .closed else { return }
        flushScheduled = true
        server.scheduleHTTP2Flush(self)
    }

    /// Runs once per loop iteration when scheduled: held request bodies go out to their
    /// backends, then the frames every stream produced go to the client in one write.
    func flushNow() {
        flushScheduled = false
        guard phase != .closed else { return }
        if !bodyDeliveries.isEmpty {
            let due = bodyDeliveries
            bodyDeliveries.removeAll(keepingCapacity: true)
            for stream in due { stream.deliverPendingBody() }
        }
        writeOutput()
        guard phase == .open else { return }
        if !codec.isAlive || (draining && activeStreams == 0 && !codec.wantsToWrite) { return closeAfterOutput() }
        if activeStreams == 0 && !client.isCongested { codec.releaseIdleMemory() }
    }

    /// Writes what nghttp2 has to send. Only while open: once closing, the FIN follows what was
    /// written (after a fatal error nghttp2's queue must not be sent at all).
    private func writeOutput() {
        guard phase == .open else { return }
        // Frames are gathered in the worker's scratch buffer (shared by its connections: flushes
        // run one after the other) and written as one; the stream copies what it cannot send now.
        // An idle connection holds no output buffer of its own.
        let scratch = server.http2Output
        while !client.isCongested {
            while scratch.bytes.count < 64 * 1024 {
                let frames = codec.takeOutput()
                if frames.isEmpty { break }
                scratch.bytes.append(raw: frames)
            }
            if scratch.bytes.isEmpty { break }
            scratch.bytes.withUnsafeBytes { client.write($0) }
            scratch.bytes.removeAll(retainedCapacity: 256 * 1024)
        }
        // A client that does not read its answers is not read either (`onDrain` resumes), and one
        // that reads nothing for `idle_timeout_ms` is closed: its streams' resets cannot even be
        // written to it, so nothing else would end them.
        if client.isCongested {
            client.pauseReading(.outputQueued)
            armSendStall()
        } else {
            client.resumeReading(.outputQueued)
            sendStallTimer?.stop()
        }
        countTraffic()
    }

    // MARK: - Codec events

    func codecStreamOpened(_ id: Int32) {
        if draining && id > drainLastStreamID {
            codec.reset(id, errorCode: HTTP2FrameCodec.refusedStream)
            return
        }
        let stream = spareStreams.popLast() ?? HTTP2Stream(connection: self, settings: server.settings)
        stream.open(id: id, settings: server.settings)
        streams.insert(stream, for: id)
        cachedID = id
        cachedStream = stream
        server.stats.add(WorkerStats.http2Streams)
        // A header block must complete within client_header_ms (an idle connection has no
        // busier deadline running): one left open would otherwise hold the connection.
        if activeStreams == 0 { armIdle(ms: server.settings.config.timeouts.clientHeaderMs) }
    }

    func codecField(_ id: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, trailers: Bool) -> Bool {
        guard let stream = stream(id) else { return true }
        // Header lists (trailers too) are counted as they are decoded: past the limit each further
        // `max_header_list_bytes` is a glitch and the stream is reset, so an HPACK reference bomb
        // (a few bytes that decode to megabytes of fields) ends the connection at once.
        let size = name.count + value.count + 32
        let before = stream.headerListBytes
        stream.headerListBytes += size
        let limit = limits.maxHeaderListBytes
        if stream.headerListBytes > limit {
            if before <= limit || before / limit != stream.headerListBytes / limit { noteGlitch() }
            // The request head answers 431 once complete. Twice the limit we announced
            // (SETTINGS_MAX_HEADER_LIST_SIZE) is no client's mistake: the connection ends.
            if stream.headerListBytes > 2 * limit {
                if phase == .open && codec.isAlive {
                    reportAbuse("a header list of over \(2 * limit) bytes (http2.max_header_list_bytes \(limit)): an HPACK bomb")
                    codec.terminate(errorCode: HTTP2FrameCodec.enhanceYourCalm)
                    scheduleFlush()
                }
                return false
            }
            if trailers { return false }
        }
        // Trailer fields of a request are not forwarded (the backend hop is HTTP/1.1 without them).
        if !trailers { stream.builder.add(name: name, value: value, maxListBytes: limit) }
        return true
    }

    func codecHeadersComplete(_ id: Int32, endStream: Bool, trailers: Bool) {
        guard let stream = stream(id) else { return }
        if trailers {
            if endStream { stream.requestBodyEnded() }
        } else {
            activeStreams += 1
            stream.isActive = true
            timerPurpose = .none
            timer.stop()
            stream.headersComplete(endStream: endStream)
        }
    }

    func codecData(_ id: Int32, _ data: UnsafeRawBufferPointer) {
        if let stream = stream(id) { stream.receiveBody(data) } else { consume(id, data.count) }
    }

    func codecRequestEnded(_ id: Int32) {
        stream(id)?.requestBodyEnded()
    }

    func codecStreamClosed(_ id: Int32, errorCode: UInt32) {
        guard let stream = streams.remove(id) else { return }
        if cachedID == id { cachedStream = nil; cachedID = 0 }
        if stream.isActive {
            stream.isActive = false
            activeStreams -= 1
        }
        stream.closed(errorCode: errorCode)
        if phase == .open && spareStreams.count < Self.maxSpareStreams {
            spareStreams.append(stream)
        } else {
            stream.dispose()
        }
        if activeStreams == 0 {
            armIdle()
            if draining { scheduleFlush() }
        }
    }

    func codecFrameReceived(type: UInt8, flags: UInt8, stream: Int32, length: Int) {
        switch type {
        case HTTP2FrameCodec.rstStreamFrame:
            // A stream reset while the proxy still works on it: the cost Rapid Reset exploits.
            if let s = self.stream(stream), s.began, !s.exchangeFinished { noteGlitch() }
            countControlFrame()
        case HTTP2FrameCodec.settingsFrame, HTTP2FrameCodec.pingFrame:
            if flags & 0x1 == 0 { countControlFrame() }  // not an ACK
        case HTTP2FrameCodec.priorityFrame:
            countControlFrame()
        case HTTP2FrameCodec.windowUpdateFrame:
            // A client that reads fast sends one or two per DATA frame it gets (Go's refreshes
            // every 4 KiB): those are not counted. Tiny increments are (a flood of them costs the
            // proxy a frame each and buys the client nothing); zero is an invalid frame.
            if length < 1024 { countControlFrame() }
        case HTTP2FrameCodec.dataFrame:
            if length == 0 && flags & 0x1 == 0 { countControlFrame() }  // empty DATA without END_STREAM
        default:
            break
        }
    }

    func codecInvalidFrame(type: UInt8, stream: Int32) {
        noteGlitch()
    }

    func codecResponseBody(_ id: Int32, into buffer: UnsafeMutableRawBufferPointer) -> (count: Int, end: Bool)? {
        guard let stream = stream(id) else { return (0, true) }
        return stream.takeResponseBody(into: buffer)
    }

    func codecResponseEnded(_ id: Int32) {
        // RFC 9113 §8.1: the response is complete while the client still sends its body (the
        // proxy answered early): RST_STREAM(NO_ERROR) tells it to stop, and ends the stream.
        if let stream = stream(id), !stream.requestEnded { codec.reset(id, errorCode: HTTP2FrameCodec.noError) }
    }

    func codecResponseFailed(_ id: Int32) {
        stream(id)?.responseFailed()
    }

    /// Spare stream objects a connection keeps: enough for a browser's burst of requests
    /// without allocating, few enough that an idle connection holds little.
    static let maxSpareStreams = 16

    @inline(__always)
    private func stream(_ id: Int32) -> HTTP2Stream? {
        if id == cachedID, let s = cachedStream { return s }
        let s = streams[id]
        if let s {
            cachedID = id
            cachedStream = s
        }
        return s
    }

    // MARK: - For streams

    func consume(_ id: Int32, _ count: Int) {
        codec.consume(id, count)
        scheduleFlush()
    }

    /// Returns false when nghttp2 refused the head (the stream is gone, or the head is unusable).
    func submitResponse(_ id: Int32, status: UInt16, fields: borrowing HTTP2FieldList, hasBody: Bool) -> Bool {
        scheduleFlush()
        return fields.withUnsafeBytes { codec.submitResponse(id, status: status, fields: fields.fields, in: $0, hasBody: hasBody) }
    }

    func submitInterim(_ id: Int32, status: UInt16, fields: borrowing HTTP2FieldList) {
        fields.withUnsafeBytes { codec.submitInterim(id, status: status, fields: fields.fields, in: $0) }
        scheduleFlush()
    }

    func resumeBody(_ id: Int32) {
        codec.resumeBody(id)
        scheduleFlush()
    }

    func resetStream(_ id: Int32, errorCode: UInt32) {
        codec.reset(id, errorCode: errorCode)
        scheduleFlush()
    }

    func scheduleBodyDelivery(_ stream: HTTP2Stream) {
        bodyDeliveries.append(stream)
        scheduleFlush()
    }

    /// A stream's exchange is over (its response may still be going out).
    func exchangeFinished(_ stream: HTTP2Stream) {
        scheduleFlush()
    }

    // MARK: - Abuse

    /// One more protocol glitch; past `max_glitches` the connection ends.
    func noteGlitch() {
        let now = server.loop.now
        if glitchesHalvedAt == 0 { glitchesHalvedAt = now }
        while glitches > 0 && now &- glitchesHalvedAt >= Self.glitchHalfLifeMs {
            glitches /= 2
            glitchesHalvedAt += Self.glitchHalfLifeMs
        }
        if glitches == 0 { glitchesHalvedAt = now }
        glitches += 1
        guard glitches > limits.maxGlitches, phase == .open else { return }
        reportAbuse("\(glitches) protocol glitches (resets of streams in flight, refused frames, oversized headers, control-frame floods) passed http2.max_glitches \(limits.maxGlitches)")
        codec.terminate(errorCode: HTTP2FrameCodec.enhanceYourCalm)
        scheduleFlush()
    }

    private func countControlFrame() {
        let now = server.loop.now
        if now &- controlWindowStart >= 1000 {
            controlWindowStart = now
            controlFrames = 0
        }
        controlFrames += 1
        if controlFrames > limits.maxControlFramesPerS { noteGlitch() }
    }

    private func reportAbuse(_ why: String) {
        guard !reportedAbuse else { return }
        reportedAbuse = true
        server.stats.add(WorkerStats.http2AbusiveConnections)
        let peer = peerAddress?.ipString ?? "unknown"
        server.warnAboutHTTP2Abuse("HTTP/2 client \(peer): \(why); connection ended with GOAWAY")
    }

    // MARK: - Timers, drain and closing

    private enum TimerPurpose { case none, idle, flush }
    private var timerPurpose = TimerPurpose.none

    /// Runs while the client's output queue is over its high-water mark.
    private var sendStallTimer: Timer?

    private func armSendStall() {
        if sendStallTimer == nil {
            let t = Timer(loop: server.loop)
            t.onFire = { [unowned self] in
                guard self.phase != .closed, self.client.isCongested else { return }
                self.teardown()
            }
            sendStallTimer = t
        }
        if sendStallTimer?.isActive == false { sendStallTimer?.start(timeoutMs: UInt64(max(limits.idleTimeoutMs, 1))) }
    }

    private func armIdle(ms: Int? = nil) {
        timerPurpose = .idle
        timer.start(timeoutMs: UInt64(max(ms ?? limits.idleTimeoutMs, 1)))
    }

    private func timerFired() {
        switch timerPurpose {
        case .none:
            break
        case .idle:
            guard activeStreams == 0, phase == .open else { return }
            codec.goAway(errorCode: HTTP2FrameCodec.noError)
            draining = true
            drainLastStreamID = codec.lastStreamID
            writeOutput()
            closeAfterOutput()
        case .flush:
            teardown()
        }
    }

    /// Graceful shutdown or reload: GOAWAY naming the last stream taken; streams up to it finish,
    /// later ones are refused (the client retries them elsewhere), then the connection closes.
    func closeIfIdle() {
        guard phase == .open, !draining else { return }
        draining = true
        drainLastStreamID = codec.lastStreamID
        codec.goAway(errorCode: HTTP2FrameCodec.noError, lastStreamID: drainLastStreamID)
        scheduleFlush()
    }

    func forceClose() { teardown() }

    /// Everything queued goes out, then FIN; a client that does not read cannot hold the
    /// connection beyond `idle_timeout_ms`.
    private func closeAfterOutput() {
        guard phase == .open else { return }
        phase = .closing
        abandonStreams()
        client.resumeReading(.outputQueued)
        client.shutdown { [self] _ in teardown() }
        timerPurpose = .flush
        timer.start(timeoutMs: UInt64(limits.idleTimeoutMs))
    }

    private func abandonStreams() {
        let open = streams.removeAll()
        cachedStream = nil
        cachedID = 0
        for stream in open {
            stream.closed(errorCode: HTTP2FrameCodec.cancel)
            stream.dispose()
        }
        for stream in spareStreams { stream.dispose() }
        spareStreams.removeAll()
        bodyDeliveries.removeAll()
    }

    private func teardown() {
        guard phase != .closed else { return }
        phase = .closed
        abandonStreams()
        countTraffic()
        timerPurpose = .none
        timer.close()
        sendStallTimer?.close()
        sendStallTimer = nil
        client.close()
        server.http2ConnectionClosed()
        server.clientClosed(self, isAdminListener: isAdminListener)
    }

    private func countTraffic() { traffic.count(client, into: server.stats) }
}
