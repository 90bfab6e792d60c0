/// Where a `ProxyExchange` sends its response: the client side of one exchange, whatever protocol
/// carries it. `HTTP1ServerConnection` implements it by writing HTTP/1.1 (re-framing bodies as
/// chunked or close-delimited for the client); an HTTP/2 stream will implement it with HEADERS
/// and DATA frames.
///
/// The exchange hands over heads, not wire bytes: the final response head as parsed from the
/// backend (the sink rewrites it for its protocol), the proxy's own answers as `LocalReply`, and
/// body bytes already stripped of the backend's framing.
///
/// Ordering contract: at most one final head (`sendResponseHead` or `sendLocalReply`) per
/// exchange, interim heads only before it, body calls only after `sendResponseHead`, then
/// `endResponse` once. `appendResponseBody` may keep bytes back until the next `sendResponseBody`,
/// `flushResponse` or `endResponse`; `discardBufferedResponse` drops what was kept back (nothing of
/// it reached the client, so the exchange can still answer with an error instead).
/// Threading: loop thread only; no method calls back into the exchange synchronously.
protocol ResponseSink: AnyObject {
    /// A 1xx head to pass on now (100 Continue, 103 Early Hints).
    func sendInterimResponse(_ head: ResponseHead)
    /// The final head from the backend; `framing` is the backend's body framing, `closeAfter`
    /// that the client connection ends after this response. Kept back until body bytes or a
    /// flush follow, so head and first body bytes leave together.
    func sendResponseHead(_ head: inout ResponseHead, framing: BodyFraming, closeAfter: Bool)
    /// Body bytes (the backend's framing removed), written now together with anything kept back.
    func sendResponseBody(_ data: UnsafeRawBufferPointer)
    /// Body bytes that may wait for the next write (many small decoded chunks become one write).
    func appendResponseBody(_ data: UnsafeRawBufferPointer)
    /// Writes whatever was kept back.
    func flushResponse()
    /// The body is complete (for HTTP/1: the chunked terminator, if the client gets chunks).
    func endResponse()
    /// Drops whatever was kept back and not written.
    func discardBufferedResponse()
    /// A whole answer from the proxy itself (errors, `/_health`, admin pages).
    func sendLocalReply(_ reply: LocalReply, keepAlive: Bool)
    /// The client is not reading fast enough: the exchange stops reading its backend until
    /// `ProxyExchange.responseSinkDrained()`.
    var isResponseCongested: Bool { get }
    /// Client-visible bytes written for the current exchange (the access log's `bytes_sent`).
    var responseBytesSent: UInt64 { get }
}

/// What a `ProxyExchange` needs from the connection (or stream) that received its request,
/// beyond the response sink: the request body's flow, its verdicts, its deadline and its end.
///
/// The request body comes the other way, from the downstream into the exchange
/// (`ProxyExchange.sendRequestBody` / `endRequestBody`), with its framing already removed.
protocol ExchangeDownstream: ResponseSink {
    /// The upstream can take the request body now: deliver what was buffered meanwhile.
    func upstreamReadyForBody()
    /// The upstream is not reading fast enough: stop delivering request body bytes until
    /// `resumeRequestBody`. Pauses and resumes come in pairs.
    func pauseRequestBody()
    func resumeRequestBody()
    /// Loop milliseconds of the last request bytes received (for `client_body_ms`).
    var lastRequestActivity: UInt64 { get }

    /// The request is refused as the client's fault (a bad path, a stalled body): answer it with
    /// `error`'s status and end the connection or stream. Like `cutResponse`, it ends the
    /// exchange from the downstream's side: the downstream calls `ProxyExchange.abandon()`
    /// (which counts the exchange once and closes the upstream) before it returns.
    func rejectRequest(_ error: HTTPParseError)
    /// Ends the client side at once: a response already begun cannot be finished. The downstream
    /// calls `ProxyExchange.abandon()`, as for `rejectRequest`.
    func cutResponse()
    /// The backend accepted a protocol switch: relay its 101 and join the client to `upstream`
    /// (still the exchange's, which closes it when the client goes). `rest`: the backend's first
    /// bytes of the new protocol, sent right after its head.
    func switchProtocols(_ head: ResponseHead, upstream: UpstreamConnection, rest: UnsafeRawBufferPointer)
    /// The exchange is over (response complete or answered locally): the next request or close.
    func exchangeEnded()

    /// The exchange's one deadline, kept by the downstream's timer (one timer per connection):
    /// `ProxyExchange.deadlineReached()` is called when it is due (the deadline is then spent: the
    /// exchange arms another if it needs one). `arm` replaces it, `advance` only brings an armed
    /// one sooner. The downstream drops it when the exchange ends.
    /// The address the client connected to (the PROXY protocol header sent to backends names it).
    var clientLocalAddress: SocketAddress? { get }

    func armExchangeDeadline(inMs ms: UInt64)
    func advanceExchangeDeadline(inMs ms: UInt64)
}
