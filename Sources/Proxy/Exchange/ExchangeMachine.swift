/// The decisions of one exchange — a request and its response — as a value type: events in,
/// actions out, no sockets, no clock, no configuration lookups (the caller passes the facts).
///
/// What it decides: how many upstream connections may be tried and whether a pooled one may
/// serve (and how hard to look for stale bytes on it), 502 versus 503 when no backend is left,
/// failover after a connect failure (none when the proxy itself is out of resources), the retry
/// after the keep-alive race, what an interim, a 101 and a final head lead to (relay, tunnel,
/// refuse; an early response closes the connection after it), whether a failure can still be
/// answered or only cut, which deadline of an exchange in flight is due (408, 504, a cut), and
/// whether the upstream connection goes back to its pool.
///
/// The connection (`HTTP1ServerConnection`) executes the actions; the machine is its memory of what
/// happened so far. Modelled on async-http-client's `HTTPRequestStateMachine`. Threading: a
/// value owned by one exchange on one loop.
struct ExchangeMachine {
    /// The whole request (head and body) has been read from the client.
    private(set) var requestComplete = false
    /// The request may go again on another connection: nothing in it can have taken effect twice
    /// (an idempotent method and no body).
    private(set) var canRetry = false
    /// The request asks for a protocol switch the proxy tunnels (WebSocket, …).
    private(set) var wantsUpgrade = false
    /// Upstream connections tried for this request (`limits.max_upstream_attempts`); the
    /// keep-alive race's retry is not counted.
    private(set) var attempts = 0
    /// The keep-alive race was retried once (on a fresh connection).
    private(set) var hasRetried = false
    /// Tries sent again to another backend after they failed (`retries.attempts`).
    private(set) var retries = 0
    /// The current upstream connection came from the pool.
    private(set) var upstreamWasReused = false
    /// The current upstream connection may be pooled afterwards: it broke no framing rule.
    private(set) var upstreamReusable = true
    /// A response is under way (or was answered locally): its head is decided.
    private(set) var responseStarted = false
    /// Some of this exchange's final response has been handed to the client stream.
    private(set) var responseBytesWritten = false
    /// Interim (1xx) responses relayed (`limits.max_interim_responses`).
    private(set) var interimResponses = 0
    /// The client connection closes once this response is out.
    private(set) var closeAfterResponse = false

    // MARK: - The request

    /// A request head was parsed and admitted: a new exchange begins.
    mutating func begin(framing: BodyFraming, isIdempotent: Bool, wantsUpgrade: Bool) {
        switch framing {
        case .contentLength(let n): requestComplete = n == 0
        case .chunked: requestComplete = false
        case .none, .untilClose: requestComplete = true
        }
        canRetry = isIdempotent && framing == .none
        // Only a request without a body may switch protocols: a 101 arriving mid-body would
        // leave the rest of the body to be read as the new protocol.
        self.wantsUpgrade = wantsUpgrade && framing == .none
        attempts = 0
        hasRetried = false
        retries = 0
        responseStarted = false
        responseBytesWritten = false
        closeAfterResponse = false
    }

    /// The request body's last byte was read (and relayed).
    mutating func requestBodyFinished() { requestComplete = true }

    /// Whether the client connection may stay open for another request after a local answer or
    /// an error response: the client asked for it and no unread body is left behind.
    func keepAliveAfterLocalAnswer(clientKeepAlive: Bool, draining: Bool) -> Bool {
        clientKeepAlive && requestComplete && !draining
    }

    /// The proxy answered itself (local endpoint, 4xx/5xx): the response is decided.
    mutating func answeredLocally(keepAlive: Bool) {
        responseStarted = true
        closeAfterResponse = !keepAlive
    }

    // MARK: - Choosing an upstream connection

    /// Why no (further) upstream connection is tried.
    enum GiveUp: Equatable {
        /// `limits.max_upstream_attempts` connections were tried: 502.
        case attemptsExhausted
        /// Every backend the balancer would offer was tried, or some is healthy but excluded: 502.
        case noBackendLeft
        /// No backend of the upstream is healthy and none was tried: 503.
        case noHealthyBackend

        var status: UInt16 { self == .noHealthyBackend ? 503 : 502 }
    }

    /// Whether another connection may be tried.
    func mayAttempt(maxAttempts: Int) -> Bool { attempts < maxAttempts }

    /// The balancer had no backend left to offer.
    func noBackend(anyHealthy: Bool, triedAny: Bool) -> GiveUp {
        anyHealthy || triedAny ? .noBackendLeft : .noHealthyBackend
    }

    /// Which connection a new attempt may use.
    enum ConnectionChoice: Equatable {
        /// A pooled connection if one is idle; `checkWholeSocket`: one with any unread byte or
        /// EOF waiting is stale (a request that cannot be retried must not meet a dying
        /// connection), else only bytes in the poll batch being dispatched are looked for.
        case pooledOrNew(checkWholeSocket: Bool)
        /// A new connection: the retry after the keep-alive race goes out fresh (a backend that
        /// closed one idle connection has likely closed its siblings too).
        case newOnly
    }

    /// A backend was picked: counts the attempt and says which connection may serve it.
    mutating func attemptStarted() -> ConnectionChoice {
        attempts += 1
        return hasRetried ? .newOnly : .pooledOrNew(checkWholeSocket: !canRetry)
    }

    /// An upstream connection was attached to the exchange; `pooled`: it came from the pool.
    mutating func upstreamAttached(pooled: Bool) {
        upstreamWasReused = pooled
        upstreamReusable = true
        responseStarted = false
        responseBytesWritten = false
    }

    /// What a failed connect leads to.
    enum ConnectFailure: Equatable {
        /// Another backend is tried (nothing was sent: any method may go).
        case tryNextBackend
        /// The proxy itself is out of a resource (descriptors, ports, memory): every other
        /// backend would fail the same way and none is to blame — 503 with Retry-After.
        case localResourceExhausted
    }

    func connectFailed(isLocalResourceProblem: Bool) -> ConnectFailure {
        isLocalResourceProblem ? .localResourceExhausted : .tryNextBackend
    }

    /// The upstream connection is ready: the request goes out.
    mutating func upstreamConnected() { interimResponses = 0 }

    // MARK: - The response

    /// What an interim (1xx) response leads to.
    enum InterimAction: Equatable {
        /// Relayed to the client (HTTP/1.1); the final head follows.
        case relay
        /// Dropped: an HTTP/1.0 client does not understand interim responses.
        case drop
        /// More than `limits.max_interim_responses`: a misbehaving backend, 502.
        case refuse
    }

    mutating func interimResponse(maxInterim: Int, clientVersionMinor: UInt8) -> InterimAction {
        interimResponses += 1
        if interimResponses > maxInterim { return .refuse }
        return clientVersionMinor == 1 ? .relay : .drop
    }

    /// An interim response was written to the client: a final 502 may still follow it.
    mutating func interimRelayed() { responseBytesWritten = false }

    /// What a final response head leads to.
    enum FinalHeadAction: Equatable {
        /// 101 to an Upgrade request: relay the 101 and join the connections.
        case tunnel
        /// 101 that was not asked for (the proxy strips Upgrade then): a backend error, 502.
        case refuseUnaskedSwitch
        /// Relay the response; `closeAfter`: the client connection closes once it is out.
        case relay(closeAfter: Bool)
    }

    /// `clientKeepAlive`: the request allows reuse; `bodyUntilCloseForClient`: the client will
    /// get the body delimited by closing (an HTTP/1.0 client of a chunked or close-delimited body).
    mutating func finalResponseHead(status: UInt16, clientKeepAlive: Bool, draining: Bool,
                                    bodyUntilCloseForClient: Bool) -> FinalHeadAction {
        if status == 101 { return wantsUpgrade ? .tunnel : .refuseUnaskedSwitch }
        responseStarted = true
        // An early response (the request body is still coming) is finished, then the connection
        // closes: the rest of the body is not read as the next request.
        let keepAlive = clientKeepAlive && !draining && !bodyUntilCloseForClient && requestComplete
        closeAfterResponse = !keepAlive
        return .relay(closeAfter: closeAfterResponse)
    }

    /// The 101 was relayed: the exchange is a tunnel from now on.
    mutating func tunnelStarted() {
        responseStarted = true
        responseBytesWritten = true
    }

    /// Bytes of the response were handed to the client stream.
    mutating func responseBytesSent() { responseBytesWritten = true }

    /// The upstream broke a framing rule (bytes past the body, a failed write, a close-delimited
    /// body): its connection is never pooled.
    mutating func upstreamSpoiled() { upstreamReusable = false }

    /// What a failure of the upstream side leads to.
    enum FailureAction: Equatable {
        /// Nothing of the response reached the client: it gets a 502/504 with the reason.
        case answer
        /// Part of the response is out: all the client can be told is a cut connection.
        case cutClient
    }

    /// Whether a try that failed after the request went out (reset, timeout, a 5xx head not yet
    /// relayed) may go to another backend: the request can run twice (idempotent, no body), no
    /// final head was relayed and no interim one either (the client saw nothing), retries are left.
    func mayRetry(maxRetries: Int) -> Bool {
        canRetry && !responseStarted && !responseBytesWritten && interimResponses == 0 && retries < maxRetries
    }

    /// A retry begins on another backend.
    mutating func retryStarted() {
        retries += 1
        responseStarted = false
        responseBytesWritten = false
    }

    /// The upstream failed (bad head, reset, timeout, bad chunked body).
    func upstreamFailed() -> FailureAction { responseStarted ? .cutClient : .answer }

    /// A malformed chunked body: if the head is still unsent (it arrived in the same read), the
    /// response is taken back and a 502 answers instead.
    mutating func malformedResponseBody() -> FailureAction {
        upstreamReusable = false
        if responseBytesWritten { return .cutClient }
        responseStarted = false
        return .answer
    }

    /// What the upstream closing its connection leads to.
    enum UpstreamClosed: Equatable {
        /// The normal end of a close-delimited body.
        case responseComplete
        /// The keep-alive race: a pooled connection died before answering. Try once more on a
        /// fresh connection (not counted as an attempt).
        case retryOnNewConnection
        /// The exchange failed (see `upstreamFailed`).
        case failed
    }

    /// `eof`: an orderly close (not a reset); `bodyUntilClose`: the response body is delimited by
    /// closing; `sawResponseBytes`: any byte of a response head arrived. An interim (1xx) response
    /// counts too: the backend had the request, so a retry could run it twice.
    mutating func upstreamClosed(eof: Bool, bodyUntilClose: Bool, sawResponseBytes: Bool) -> UpstreamClosed {
        let sawResponseBytes = sawResponseBytes || interimResponses > 0
        if responseStarted && bodyUntilClose && eof {
            upstreamReusable = false
            return .responseComplete
        }
        if !responseStarted && !sawResponseBytes && upstreamWasReused && !hasRetried && canRetry {
            hasRetried = true
            attempts -= 1
            return .retryOnNewConnection
        }
        return .failed
    }

    // MARK: - Deadlines of an exchange in flight

    /// The times the deadline check needs (loop milliseconds).
    struct Clock {
        var now: UInt64
        /// The client's last byte.
        var lastClientActivity: UInt64
        /// The upstream's last byte (or the client reading, for a response it is slow to take).
        var lastUpstreamActivity: UInt64
        /// When the response head is due; 0 while the request is still being sent.
        var responseHeadDueAt: UInt64
    }

    /// The limits the deadline check applies (milliseconds).
    struct Limits {
        var clientBodyMs: UInt64
        var upstreamMs: UInt64
        /// `response_idle_ms`, or `event_stream_idle_ms` for Server-Sent Events.
        var responseIdleMs: UInt64
    }

    /// Which deadline, if any, has passed.
    enum DeadlineVerdict: Equatable {
        /// None: check again in this many milliseconds.
        case rearm(inMs: UInt64)
        /// The client paused its body too long: 408 (or a cut if the response has begun).
        case requestBodyStalled(FailureAction)
        /// No response head within `upstream_ms` of the request's last byte: 504.
        case responseHeadTimedOut
        /// The response body went silent too long: cut (it has begun).
        case responseStalled
    }

    func checkDeadlines(_ clock: Clock, _ limits: Limits) -> DeadlineVerdict {
        let now = clock.now
        var next = UInt64.max
        if !requestComplete {
            let paused = now &- clock.lastClientActivity
            if paused >= limits.clientBodyMs { return .requestBodyStalled(responseStarted ? .cutClient : .answer) }
            next = limits.clientBodyMs - paused
        }
        if !responseStarted {
            // While the body is still coming the backend is waiting for it: no head deadline yet.
            if clock.responseHeadDueAt != 0 {
                if now >= clock.responseHeadDueAt { return .responseHeadTimedOut }
                next = min(next, clock.responseHeadDueAt - now)
            }
        } else {
            let silent = now &- clock.lastUpstreamActivity
            if silent >= limits.responseIdleMs { return .responseStalled }
            next = min(next, limits.responseIdleMs - silent)
        }
        return .rearm(inMs: max(next == .max ? limits.upstreamMs : next, 1))
    }

    // MARK: - The end

    /// The response is complete: whether its upstream connection may go back to the pool.
    func upstreamMayBePooled(responseKeepAlive: Bool, responseBodyUntilClose: Bool) -> Bool {
        upstreamReusable && responseKeepAlive && !responseBodyUntilClose && requestComplete
    }

    /// The response is complete: whether the client connection closes now.
    func closesAfterResponse(draining: Bool, nextRequestWaiting: Bool) -> Bool {
        closeAfterResponse || !requestComplete || (draining && !nextRequestWaiting)
    }

    /// The exchange is over; the connection waits for the next request.
    mutating func finished() { responseStarted = false }
}
