/// What one exchange (a request and its response) needs while it runs: the heads and their
/// buffers, the body framing, the upstream connection and pipes, the attempts made, and the
/// accounting. Separate from the connection so that an idle keep-alive connection holds none of
/// it: a connection takes an `ExchangeState` from its worker's `ExchangeStatePool` when the first
/// byte of a request arrives and gives it back once the exchange is over and nothing is buffered.
///
/// The fields carry over from one exchange to the next (on one connection or another); each is
/// set where an exchange needs it, so reuse costs only `clearForReuse`.
///
/// A struct behind an `UnsafeMutablePointer` the pool allocates, not a class: a connection reaches
/// it through a pointer that changes between exchanges, and a class reference in a `var` (strong
/// or `unowned(unsafe)`) made every access a retain/release pair and every struct field passed
/// along a copy — 1,700 to 5,000 more instructions per request in callgrind. `pointee` is an
/// addressor: fields are read and written in place, as if stored in the connection.
/// Ownership: the connection that took it, or the pool. Threading: loop thread only.
struct ExchangeState: ~Copyable {
    /// Limits on a backend's response head (not configurable: a backend is trusted more than a client).
    static var responseHeadLimits: HeadLimits { HeadLimits(maxHeadBytes: 64 * 1024, maxTargetBytes: 64 * 1024, maxHeaderCount: 256) }

    init(headLimits: HeadLimits) {
        requestHeadBytes = HeadAccumulator(limits: headLimits, isRequest: true)
    }

    /// The exchange's decisions and what they remember (see `ExchangeMachine`).
    var machine = ExchangeMachine()
    var requestHeadBytes: HeadAccumulator
    var request = RequestHead()
    var requestBodyRemaining: UInt64 = 0
    /// Decoded bytes of a chunked request body so far (for `max_body_bytes`).
    var requestBodyBytes: UInt64 = 0
    /// The body limit in force (0: none): `limits.max_body_bytes`, or the route's
    /// `max_body_bytes` once routed. The downstream holds a chunked body to it as it arrives.
    var maxBodyBytes: UInt64 = 0
    /// The client as far as the proxy can tell (`trusted_proxies`): its address as text, and as
    /// bytes (4 or 16) when a trusted proxy named another than the peer (nil: the peer's, made
    /// only when a policy needs it). Set once the head is parsed; what the access log, policies,
    /// `X-Real-IP`, `Forwarded`, placeholders and the `client_ip` hash key use.
    var clientIP: [UInt8] = []
    var clientAddress: [UInt8]?
    /// What to forward as the request target (origin-form).
    var forwardTarget: Range<Int>? = nil
    var requestDecoder = ChunkedDecoder()
    /// Client bytes received but not processed yet: body bytes waiting for the upstream connect,
    /// or the next pipelined requests.
    var pending: [UInt8] = []
    /// The route and upstream chosen for the current request, and the backend within it.
    var route: Router.Route?
    /// What a checked JSON Web Token brings: its `forward_claims` fields for the backend, and
    /// the hash a `jwt:CLAIM` rate-limit key counts by.
    var claimFields: [UInt8] = []
    var claimRateKey: UInt64 = 3
    /// The request already waited for a JWKS fetch: it may not wait for another.
    var waitedForKeys = false
    /// The address (of `SharedBackend`'s address and fallbacks) the current connect went to, and
    /// how many times this request moved a backend on to its next address.
    var connectAddressIndex = 0
    var addressMoves = 0
    /// The backend that moved on to its next address (tried there next).
    var addressRetryBackend = -1
    /// Happy eyeballs (RFC 8305): a backend whose name has further addresses gets a second
    /// connect, to its next address, when the first has not completed within
    /// `SharedBackend.connectionAttemptDelayMs`; whichever connects first carries the request.
    /// `racingUpstream` is that second connection while both are pending; `raceConnectMsLeft`
    /// the connect time left once the delay is over (0: no race is due).
    var racingUpstream: UpstreamConnection?
    var racingAddressIndex = 0
    /// The racer's address when its connect failed (-1: none), skipped when the backend moves on.
    var racerFailedIndex = -1
    var raceConnectMsLeft: UInt64 = 0
    /// Every backend was down and `try_when_all_down` sent the request to one anyway: if that
    /// connect fails, the answer is the 503 it would have had.
    var triedWhileAllDown = false
    var backendIndex = -1
    var upstream: UpstreamConnection?
    /// Backends tried for this request, and connections tried in all (`limits.max_upstream_attempts`).
    var triedBackends = AttemptSet()
    /// The request waits in its upstream's queue under this ticket (0: it does not).
    var queueTicket: UInt64 = 0
    /// When it started waiting (loop ms).
    var queuedAt: UInt64 = 0
    /// The upstream connection is ready for the request (connected, head written).
    var upstreamReady = false
    /// The exchange paused the request body (the upstream's write queue is full) and reading the
    /// upstream (the client's is): each is lifted by the other side's drain.
    var requestBodyPaused = false
    var upstreamReadPaused = false
    /// When the exchange last lifted the request body pause: the client's stall clock restarts
    /// there, not at its last byte before the pause (which the proxy itself held back).
    var requestBodyResumedAt: UInt64 = 0
    var responseHeadBytes = HeadAccumulator(limits: ExchangeState.responseHeadLimits, isRequest: false)
    var response = ResponseHead()
    var responseBodyRemaining: UInt64 = 0
    var responseDecoder = ChunkedDecoder()
    var responseFraming = BodyFraming.none
    var clientFraming = HeaderRewriter.OutgoingFraming.none
    /// The response body is being compressed (`compress`) on its way to the client.
    var compressor: StreamCompressor?
    /// The request inspector's recording of this exchange (`inspect.enabled`), nil otherwise.
    var inspection: InspectionRecorder?
    var rewriter = HeaderRewriter()
    /// The current request's `X-Request-Id` (capacity reused between requests).
    var requestID: [UInt8] = []
    /// Output buffers, each flushed within the callback that filled it: the HTTP/1 bytes for the
    /// client (written by the connection as response sink) and for the upstream (by the exchange).
    var toClient = ByteBuffer(capacity: 512)
    var toUpstream = ByteBuffer(capacity: 512)
    /// An exchange began (or a request was refused) and has not been counted yet.
    var exchangeOpen = false
    /// The current request's head was parsed: its method, target and fields can be logged.
    var requestParsed = false
    /// `uv_hrtime` when the request's first byte arrived, when its backend was picked, and when
    /// the response head arrived (0: none yet).
    var requestStartNs: UInt64 = 0
    var upstreamStartNs: UInt64 = 0
    var upstreamHeadNs: UInt64 = 0
    /// The status the client got for this exchange; 0 while none (counted as 499 if it ends so).
    var responseStatus: UInt16 = 0
    /// The backend (index in the route's upstream) that took the request last, -1 for none.
    var servedBy = -1
    /// `client.bytesWritten` when the request began, and the traffic already added to the metrics.
    var bytesSentAtStart: UInt64 = 0
    var lastUpstreamActivity: UInt64 = 0
    /// When the response head is due (loop milliseconds): `upstream_ms` after the request was
    /// sent in full, not moved by interim responses. 0 while the request is still being sent.
    var responseHeadDueAt: UInt64 = 0
    /// The longest silence allowed between response body bytes (`response_idle_ms`, or
    /// `event_stream_idle_ms` for Server-Sent Events), chosen when the response head arrives.
    var responseIdleLimitMs: UInt64 = 0
    var lastConnectFailure: String?
    /// How each backend tried for this request failed, for the HTML error page (failures only).
    var failedAttempts: [ErrorPage.Attempt] = []

    /// Scratch capacity kept across exchanges; beyond it a buffer is released.
    static var retainedScratchBytes: Int { 8 * 1024 }

    /// Leaves nothing of the last exchange that the next one (on another connection) could see:
    /// a connection torn down mid-head or mid-exchange gives its state back as it was.
    mutating func clearForReuse() {
        pending.removeAll(keepingCapacity: true)
        exchangeOpen = false
        machine.finished()
        requestBodyPaused = false
        upstreamReadPaused = false
        requestBodyResumedAt = 0
        route = nil  // it holds its configuration generation alive otherwise
        readyForNextExchange()
    }

    /// Readies the state for the next exchange once one is over: resets the head accumulators
    /// and lets go of buffers that grew large (chunked re-framing, a long pipelined burst, huge
    /// heads), so a pooled state costs a few KiB, not 64.
    mutating func readyForNextExchange() {
        requestBodyResumedAt = 0  // each exchange's stall clock starts from its own events
        queueTicket = 0
        queuedAt = 0
        compressor = nil  // its coder's state is large: never kept past its response
        inspection = nil
        let keep = Self.retainedScratchBytes
        toClient.removeAll(retainedCapacity: keep)
        toUpstream.removeAll(retainedCapacity: keep)
        if pending.isEmpty && pending.capacity > keep { pending = [] }
        // Heads as large as `max_head_bytes` (or a backend's 64 KiB) once must not stay allocated:
        // a burst of them would otherwise pin that much per pooled state.
        if request.bytes.capacity > keep { request.bytes = [] }
        if response.bytes.capacity > keep { response.bytes = [] }
        if request.fields.capacity > Self.retainedFields { request.fields = [] }
        if response.fields.capacity > Self.retainedFields { response.fields = [] }
        // Both heads were moved out (or are abandoned): the accumulators start over.
        requestHeadBytes.reset(keepingAtMost: keep)
        responseHeadBytes.reset(keepingAtMost: keep)
    }

    /// Header fields kept room for across exchanges; beyond it the array is released.
    static var retainedFields: Int { 64 }
}

/// A worker's spare `ExchangeState`s. Taking one costs an array pop, not a dozen allocations,
/// and idle connections hold none: the pool only needs as many as exchanges run at once.
/// Bounded (`capacity`); beyond it a returned state is freed. Frees its spares when it goes (a
/// state taken must be given back before: connections are closed before their server).
/// Threading: its worker's loop only.
final class ExchangeStatePool {
    private var spare: [UnsafeMutablePointer<ExchangeState>] = []
    /// Spare states always kept. Beyond it, spares are kept up to the most states in use at once
    /// since the last `trim()`: under 1,000 keep-alive clients that come and go between requests,
    /// a fixed 256 freed and rebuilt a state (and its buffers) for most requests (−8 % requests/s
    /// at c1000). A spare state keeps at most `retainedScratchBytes` per buffer and
    /// `retainedFields` fields per head (~2 KiB for ordinary heads, never more than ~45 KiB).
    let capacity: Int
    /// States handed out and not given back, and the most at once since the last `trim()`.
    private(set) var inUse = 0
    private var peakInUse = 0

    /// What a connection's pointer holds while it has no state: never read or written (every use
    /// is behind a check that the connection holds one); it spares the hot path an Optional.
    let detached: UnsafeMutablePointer<ExchangeState>

    init(capacity: Int = 256) {
        self.capacity = capacity
        detached = .allocate(capacity: 1)
        detached.initialize(to: ExchangeState(headLimits: HeadLimits(maxHeadBytes: 0, maxTargetBytes: 0, maxHeaderCount: 0)))
    }

    deinit {
        for state in spare { free(state) }
        free(detached)
    }

    var count: Int { spare.count }

    func take(headLimits: HeadLimits) -> UnsafeMutablePointer<ExchangeState> {
        inUse += 1
        if inUse > peakInUse { peakInUse = inUse }
        if let state = spare.popLast() {
            state.pointee.requestHeadBytes.limits = headLimits
            return state
        }
        let state = UnsafeMutablePointer<ExchangeState>.allocate(capacity: 1)
        state.initialize(to: ExchangeState(headLimits: headLimits))
        return state
    }

    /// Takes a state back. `idle`: the connection finished its exchange normally and emptied it
    /// already (head reset, nothing pending, scratch trimmed); otherwise it is cleared here.
    func recycle(_ state: UnsafeMutablePointer<ExchangeState>, idle: Bool) {
        inUse -= 1
        guard spare.count < max(capacity, peakInUse) else { return free(state) }
        if idle {
            // Already trimmed and reset by the connection (`recycleExchangeStateIfIdle` takes
            // only a state whose head accumulator is pristine).
            state.pointee.route = nil  // it holds its configuration generation alive otherwise
        } else {
            state.pointee.clearForReuse()
        }
        spare.append(state)
    }

    /// Lets go of spares beyond what the last interval needed (the worker's sweep timer calls it),
    /// so a past burst does not hold memory for ever.
    func trim() {
        let keep = max(capacity, peakInUse)
        while spare.count > keep { free(spare.removeLast()) }
        peakInUse = inUse
    }

    private func free(_ state: UnsafeMutablePointer<ExchangeState>) {
        state.deinitialize(count: 1)
        state.deallocate()
    }
}
