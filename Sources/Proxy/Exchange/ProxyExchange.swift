/// Runs one exchange at a time for its downstream: from a parsed request head to the end of its
/// response. It admits the request, answers locally (`/_health`, admin pages, errors), routes,
/// picks a backend, connects (with failover and the keep-alive-race retry), writes the request
/// head and body to the backend, reads and checks the response, and hands it to the downstream
/// as a `ResponseSink` — never HTTP/1 client bytes. The decisions themselves are
/// `ExchangeMachine`'s (a value type tested without sockets); this type executes them.
///
/// The downstream owns the exchange and drives it: `begin()` with a parsed request in `x`,
/// request body bytes through `sendRequestBody` / `endRequestBody` (framing already removed),
/// `responseSinkDrained()` when the client has room again, `deadlineReached()` when the deadline
/// it keeps for the exchange is due, `connectionClosed()` when it goes. The upstream connection
/// reports to the exchange as its `UpstreamConnectionDelegate`.
///
/// An HTTP/1 connection has one exchange object for its life and runs its requests through it
/// in turn; the per-request memory is the pooled `ExchangeState` behind `x`, held only while a
/// request is under way (`hasState`).
///
/// Lifetime: owned (strong `let`) by its downstream, which it reaches unretained: the downstream
/// outlives every call into it. A connect callback may find the exchange after its downstream
/// is gone: it then sees `hasState` false and does nothing. Threading: loop thread only.
final class ProxyExchange<Downstream: ExchangeDownstream>: UpstreamConnectionDelegate {
    /// Strong `let` for the same reason as the connection's: calls through it need no retain.
    let server: ProxyServer
    /// Unretained (`Unmanaged`, used through `down`): a strong reference would be a cycle, and
    /// `unowned(unsafe)` still retains around each call. Set once, by `setDownstream`.
    private var downstreamRef: Unmanaged<Downstream>?
    /// The configuration the exchange runs with, set by the downstream before `begin()`.
    var settings: ServerSettings
    /// The state of the exchange under way; meaningful only while `hasState`.
    var x: UnsafeMutablePointer<ExchangeState>
    var hasState = false

    /// The client's IP as text (for `X-Forwarded-For`, `X-Real-IP`, the access log), found once.
    let peerIP: [UInt8]
    /// The peer's address (nil for in-memory tests); its bytes are made only when a policy or
    /// `trusted_proxies` asks (`clientAddressBytes`).
    let peerAddress: SocketAddress?
    /// `peerIP` is an IPv6 address (quoted in `Forwarded`).
    let peerIsIPv6: Bool
    /// The request came through `admin.listen`.
    let isAdminListener: Bool
    /// What the client connected to (TLS, redirect, HSTS), and what its TLS handshake settled
    /// (nil on cleartext, and for plain HTTP sent to a TLS listener).
    let listener: ListenerRole
    let tls: TLSSessionFacts?
    /// The peer is this machine (127.0.0.0/8, ::1): it may read metrics and the status page.
    let isLoopbackPeer: Bool

    /// An exchange is under way (between `begin()` and its end).
    private(set) var isRunning = false
    /// Counts finished exchanges, so a callback can tell that its exchange ended under it.
    private var exchangesFinished = 0

    /// `detached`: what `x` points to while no state is held (the pool's; never used).
    init(server: ProxyServer, settings: ServerSettings, detached: UnsafeMutablePointer<ExchangeState>,
         peerAddress: SocketAddress?, isAdminListener: Bool, listener: ListenerRole = .cleartext, tls: TLSSessionFacts? = nil) {
        self.server = server
        self.listener = listener
        self.tls = tls
        self.settings = settings
        x = detached
        let ip = peerAddress?.ipString ?? "unknown"
        peerIP = Array(ip.utf8)
        self.peerAddress = peerAddress
        peerIsIPv6 = ip.utf8.contains(UInt8(ascii: ":"))
        self.isAdminListener = isAdminListener
        // On a `proxy_protocol` listener the address is what a header said: anyone able to reach
        // the listener could claim 127.0.0.1, so it never opens the loopback-only paths.
        isLoopbackPeer = !listener.expectsProxyHeader && AdminPaths.isLoopback(ip)
    }

    /// The downstream that owns this exchange, given right after both exist.
    func setDownstream(_ downstream: Downstream) {
        downstreamRef = Unmanaged.passUnretained(downstream)
    }

    /// Calls into the downstream without retaining it.
    @inline(__always)
    private func down<R>(_ body: (Downstream) -> R) -> R {
        downstreamRef.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    // MARK: - Starting

    /// A complete request head is in `x.request` (its body, if any, follows through
    /// `sendRequestBody`): answer it or send it on.
    func begin() {
        isRunning = true
        beginAccounting(parsed: true)
        x.pointee.machine.begin(framing: x.pointee.request.framing, isIdempotent: x.pointee.request.isIdempotent,
                                wantsUpgrade: x.pointee.request.connectionUpgrade && !server.isDraining
                                    && x.pointee.rewriter.isTunnelableUpgrade(x.pointee.request))
        if let i = x.pointee.request.requestIDField, RequestIDGenerator.isWellFormed(x.pointee.request.bytes, x.pointee.request.fields[i].value) {
            x.pointee.requestID.removeAll(keepingCapacity: true)
            x.pointee.requestID.append(x.pointee.request.bytes, x.pointee.request.fields[i].value)
        } else {
            server.requestIDs.next(into: &x.pointee.requestID)
        }
        // Recorded from here (a loop or a malformed request is what one looks for in the
        // inspector), listed once the request is known not to be for the proxy itself.
        if settings.config.inspect.enabled { beginInspection() }
        if x.pointee.request.hasVia && ProxyIdentity.requestHasLooped(x.pointee.request) {
            return failExchange(status: 508, reason: "Loop Detected: this request already passed through this proxy (its Via names it): a backend points back at the proxy's own listener")
        }
        guard admit() else { return }
        identifyClient()

        // Answered by the proxy itself? A body sent with such a request is not read: close then.
        if let reply = server.answerLocally(&x.pointee.request, adminListener: isAdminListener, loopbackPeer: isLoopbackPeer,
                                            inspectorReplay: x.pointee.inspection?.replayOf != nil) {
            x.pointee.inspection = nil  // the proxy's own endpoints are not listed
            return answer(reply)
        }
        if let recorder = x.pointee.inspection {
            recorder.seq = server.metrics.inspector.takeSeq()
            server.metrics.inspector.begin(recorder.inFlight, worker: server.worker, limits: settings.config.inspect)
        }
        if let port = listener.redirectPort {
            // `forwardTarget`: the origin-form part of an absolute-form target (admit set it).
            return answer(HTTPSRedirect.reply(for: x.pointee.request, target: x.pointee.forwardTarget ?? x.pointee.request.target, port: port))
        }

        // Routes match the normal form of the path (`PathNormalizer`: what a backend that resolves
        // `..`, `//` and escapes sees), not the raw bytes. `*` (OPTIONS) has no path.
        let target = x.pointee.forwardTarget ?? x.pointee.request.target
        let normal: PathNormalizer.Result
        if target.count == 1 && x.pointee.request.bytes[target.lowerBound] == UInt8(ascii: "*") {
            normal = PathNormalizer.Result(path: target, target: target, rewritten: false)
        } else {
            do { normal = try settings.router.paths.normalize(&x.pointee.request.bytes, target: target) } catch {
                return refuse(error)
            }
        }
        guard let matched = settings.router.match(x.pointee.request, path: normal.path) else {
            return failExchange(status: 404, reason: "Not Found: no route matches host \(hostForMessages) and path \(pathForMessages)")
        }
        x.pointee.route = matched
        if let recorder = x.pointee.inspection {
            recorder.route = matched.label
            recorder.upstream = settings.upstreams[matched.upstream].name
            recorder.routedNs = Platform.monotonicNanos()
        }
        if !matched.policy.refusesNothing {
            guard admitByPolicy(matched.policy) else { return }
            return admitFrom(.auth, matched, normal)
        }
        forward(to: matched, normal)
    }

    /// The steps of a route's policy after `allow`/`deny` and CORS preflights, in order. Two
    /// may wait (a password check on the thread pool, a lease from Redis): the exchange then
    /// goes on from that step's callback (`resumeLater`).
    private enum PolicyStep { case auth, rate, limits }

    private func admitFrom(_ first: PolicyStep, _ route: Router.Route, _ normal: PathNormalizer.Result) {
        var step = first
        while true {
            switch step {
            case .auth:
                if route.authenticator != nil || route.tokenAuthenticator != nil {
                    let r = x.pointee.request
                    var field: ArraySlice<UInt8>?
                    for f in r.fields where f.name.count == 13 && r.bytes.equalsIgnoringCase(f.name, "authorization") {
                        // Two credentials: one would be checked, and a backend might read the other.
                        if field != nil { return failExchange(status: 400, reason: "Bad Request: more than one Authorization field") }
                        field = r.bytes[f.value]
                    }
                    if let auth = route.authenticator, !admitByAuth(auth, field, route, normal) { return }
                    if let tokens = route.tokenAuthenticator, !admitByToken(tokens, field, route, normal) { return }
                }
                step = .rate
            case .rate:
                if let limiter = route.rateLimiter, !admitByRate(limiter) { return }
                if let global = route.globalLimiter, !admitByGlobalRate(global, route, normal) { return }
                step = .limits
            case .limits:
                guard admitByLimits(route.policy) else { return }
                return forward(to: route, normal)
            }
        }
    }

    /// A callback for a step that waits: it goes on from `next` if this exchange is still the
    /// one that asked (not answered, abandoned or followed by another request meanwhile).
    private func resumeLater(_ route: Router.Route, _ normal: PathNormalizer.Result,
                             _ body: @escaping (ProxyExchange) -> PolicyStep?) -> () -> Void {
        let finished = exchangesFinished
        return { [weak self] in
            guard let self, self.hasState, self.isRunning, self.exchangesFinished == finished,
                  self.x.pointee.route === route, let next = body(self) else { return }
            self.admitFrom(next, route, normal)
        }
    }

    /// `auth.basic`: true to go on; false when answered (401, or 503 when too many checks are
    /// under way) or waiting for the check.
    private func admitByAuth(_ auth: BasicAuthenticator, _ field: ArraySlice<UInt8>?, _ route: Router.Route,
                             _ normal: PathNormalizer.Result) -> Bool {
        let credential: [UInt8]
        switch auth.checkNow(field, nowMs: server.loop.now) {
        case .decided(let verdict): return applyAuth(verdict, auth)
        case .needsCheck(let decoded): credential = decoded
        }
        var verdictLater: BasicAuthenticator.Verdict?
        let resume = resumeLater(route, normal) { me in
            me.applyAuth(verdictLater!, auth) ? .rate : nil
        }
        let verdict = auth.check(credential, loop: server.loop) { verdict in
            verdictLater = verdict
            resume()
        }
        guard let verdict else { return false }
        return applyAuth(verdict, auth)
    }

    /// `auth.jwt`: true to go on (the token's claims noted for the backend and the rate limit);
    /// false when answered (401, or 503 while no keys could be fetched) or waiting for a fetch of
    /// the route's JWKS (then the auth step runs again when it has ended).
    private func admitByToken(_ auth: JWTAuthenticator, _ field: ArraySlice<UInt8>?, _ route: Router.Route,
                              _ normal: PathNormalizer.Result) -> Bool {
        switch auth.check(field, nowMs: Platform.wallClockMs(), mayWait: !x.pointee.waitedForKeys) {
        case .waitForKeys:
            // Once: a fetch that brought no key for the token ends the wait with a refusal.
            x.pointee.waitedForKeys = true
            guard server.waitForKeys(resumeLater(route, normal) { _ in .auth }) else {
                return refuseByPolicy(.auth, status: 503, reason: "Service Unavailable: too many requests are waiting for signing keys; try again shortly",
                                      fields: [(name: "Retry-After", value: "1")])
            }
            return false
        case .unavailable(let why):
            return refuseByPolicy(.auth, status: 503, reason: "Service Unavailable: \(why)", fields: [(name: "Retry-After", value: "5")])
        case .allowed(let accepted):
            x.pointee.claimFields = accepted.fields
            x.pointee.claimRateKey = accepted.rateKey
            return true
        case .denied(let why):
            return refuseByPolicy(.auth, status: 401, reason: "Unauthorized: \(why)",
                                  fields: [(name: "WWW-Authenticate", value: field == nil ? auth.challenge : auth.refusedChallenge)])
        }
    }

    private func applyAuth(_ verdict: BasicAuthenticator.Verdict, _ auth: BasicAuthenticator) -> Bool {
        switch verdict {
        case .allowed:
            return true
        case .denied(let why):
            return refuseByPolicy(.auth, status: 401, reason: "Unauthorized: \(why)", fields: [(name: "WWW-Authenticate", value: auth.challenge)])
        case .busy:
            return refuseByPolicy(.auth, status: 503, reason: "Service Unavailable: too many password checks are under way; try again shortly",
                                  fields: [(name: "Retry-After", value: "1")])
        }
    }

    /// The request passed the route's policy: sends it to the route's upstream.
    private func forward(to matched: Router.Route, _ normal: PathNormalizer.Result) {
        if !admitBodySize() { return }
        var target = x.pointee.forwardTarget ?? x.pointee.request.target
        // The backend gets the bytes the client sent, unless `forward: normalized` — or a prefix
        // is stripped from a path normalisation changed: the raw target need not even begin with
        // the prefix (`//api/x`, `/%61pi/x`), the normal form does. Either way what is left after
        // the prefix has no dot segment, so it cannot climb above the backend's root.
        if settings.router.forwardNormalized || (matched.stripLength > 0 && normal.rewritten) { target = normal.target }
        if matched.stripLength > 0 {
            let rest = (target.lowerBound + matched.stripLength)..<target.upperBound
            // A static route's prefix asked for without its slash (`/files`): the files would
            // see `/` and relative links in the index would resolve against the wrong place.
            if isStatic(matched), rest.isEmpty || x.pointee.request.bytes[rest.lowerBound] == UInt8(ascii: "?") {
                let prefix = String(decoding: x.pointee.request.bytes[target.lowerBound..<rest.lowerBound], as: UTF8.self)
                let location = "/" + prefix.drop { $0 == "/" } + "/" + String(decoding: x.pointee.request.bytes[rest], as: UTF8.self)
                return answer(LocalReply(status: 301, contentType: "text/plain; charset=utf-8", body: Array("Moved to \(location)\n".utf8),
                                         fields: [(name: "Location", value: location)]))
            }
            target = rest
        }
        x.pointee.forwardTarget = target
        x.pointee.triedBackends.removeAll()
        x.pointee.failedAttempts.removeAll()
        x.pointee.lastConnectFailure = nil
        connectUpstream()
    }

    /// Whether `route` is answered from files (its upstream's one backend is a static one).
    private func isStatic(_ route: Router.Route) -> Bool {
        route.upstream < settings.upstreams.count && settings.upstreams[route.upstream].backends.first?.shared.config.staticFiles != nil
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
            refuse(error)
            return false
        }
        let limits = settings.config.limits
        x.pointee.maxBodyBytes = UInt64(limits.maxBodyBytes)
        if !settings.allowedMethods.isEmpty && !settings.allowedMethods.contains(where: { x.pointee.request.bytes.equals(x.pointee.request.method, $0) }) {
            failExchange(status: 405, reason: "Method Not Allowed: \(x.pointee.request.methodString) is not accepted here",
                         fields: settings.allowField.map { allow -> [(name: StaticString, value: String)] in [(name: "Allow", value: allow)] } ?? [])
            return false
        }
        return true
    }

    /// `limits.max_body_bytes` against a declared length, where the route's policy sets no limit
    /// of its own (checked after routing, so a route's `max_body_bytes` can raise or lift it for
    /// declared and chunked bodies alike). Refused before reading the body; the connection then
    /// drains and closes.
    private func admitBodySize() -> Bool {
        let max = x.pointee.maxBodyBytes
        guard max > 0, case .contentLength(let n) = x.pointee.request.framing, n > max else { return true }
        failExchange(status: 413, reason: "Content Too Large: the body may be at most \(max) bytes")
        return false
    }

    /// `trusted_proxies`: when the peer is one, the client is the rightmost `X-Forwarded-For`
    /// address that is not (nginx's `real_ip_recursive`, Envoy's trusted hops); an entry that is
    /// not an address ends the walk. Otherwise the peer.
    private func identifyClient() {
        x.pointee.clientIP = peerIP
        x.pointee.clientAddress = nil
        let trusted = settings.config.trustedProxies
        guard !trusted.isEmpty, let peer = peerAddress?.addressBytes, trusted.contains(where: { $0.contains(peer[...]) }) else { return }
        let b = x.pointee.request.bytes
        var entries: [Range<Int>] = []
        for field in x.pointee.request.fields where field.name.count == 15 && b.equalsIgnoringCase(field.name, "x-forwarded-for") {
            forEachToken(b, field.value) { entries.append($0) }
        }
        for entry in entries.reversed() {
            var text = String(decoding: b[entry], as: UTF8.self)
            if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
            guard let address = SocketAddress(ip: text, port: 0) else { return }
            x.pointee.clientIP = Array(address.ipString.utf8)
            let bytes = address.addressBytes
            x.pointee.clientAddress = bytes
            if !trusted.contains(where: { $0.contains(bytes[...]) }) { return }
        }
    }

    /// The route's `policy`, in its documented order, up to its rate limit: `allow`/`deny` (403),
    /// a CORS preflight (answered), a worker or proxy scope `rate_limit` (429); a global one and
    /// `admitByLimits` follow. Answers, counts the refusal and returns false when the request is
    /// refused.
    private func admitByPolicy(_ policy: RoutePolicy) -> Bool {
        if !policy.allow.isEmpty || !policy.deny.isEmpty {
            let address = x.pointee.clientAddress ?? peerAddress?.addressBytes ?? []
            if !policy.admits(address[...]) {
                return refuseByPolicy(.address, status: 403,
                                      reason: "Forbidden: this route does not accept requests from \(String(decoding: x.pointee.clientIP, as: UTF8.self))")
            }
        }
        // A CORS preflight is answered here (before the route's methods: it is an OPTIONS the
        // route may not take, and it carries no credentials).
        if let cors = policy.cors, let answered = answerPreflight(cors) { return answered }
        return true
    }

    /// The rest of the route's policy, after its rate limit: `allowed_methods` (405),
    /// `max_body_bytes` (413 for a declared length; a chunked body is held to it as it arrives).
    private func admitByLimits(_ policy: RoutePolicy) -> Bool {
        if !policy.accepts(method: x.pointee.request.method, in: x.pointee.request.bytes) {
            return refuseByPolicy(.method, status: 405, reason: "Method Not Allowed: \(x.pointee.request.methodString) is not accepted on this route",
                                  fields: [(name: "Allow", value: policy.allowField)])
        }
        if let max = policy.maxBodyBytes {
            x.pointee.maxBodyBytes = UInt64(max)
            if max > 0, case .contentLength(let n) = x.pointee.request.framing, n > UInt64(max) {
                return refuseByPolicy(.bodySize, status: 413, reason: "Content Too Large: this route takes bodies of at most \(max) bytes")
            }
        }
        return true
    }

    /// The route's `rate_limit`: 429 with `Retry-After` (whole seconds, rounded up) and the
    /// IETF `RateLimit-Policy` / `RateLimit` fields when the key's bucket is empty.
    private func admitByRate(_ limiter: RateLimiter) -> Bool {
        let verdict = limiter.admit(key: rateKey(limiter.config.key, header: limiter.headerName), now: Platform.monotonicNanos())
        return verdict.allowed || refuseByRate(limiter.config, waitNs: verdict.waitNs)
    }

    /// A `scope: "global"` `rate_limit`: true to go on; false when answered (429, or 503 when
    /// Redis cannot answer and `redis.on_error` is `deny`) or waiting for Redis.
    private func admitByGlobalRate(_ limiter: GlobalRateLimiter, _ route: Router.Route, _ normal: PathNormalizer.Result) -> Bool {
        let key = rateKey(limiter.config.key, header: limiter.headerName)
        if let verdict = limiter.admitNow(key: key, now: Platform.monotonicNanos()) { return applyGlobalRate(verdict, limiter) }
        var verdictLater: GlobalRateLimiter.Verdict?
        let resume = resumeLater(route, normal) { me in
            me.applyGlobalRate(verdictLater!, limiter) ? .limits : nil
        }
        let verdict = limiter.wait(key: key) { verdict in
            verdictLater = verdict
            resume()
        }
        guard let verdict else { return false }
        return applyGlobalRate(verdict, limiter)
    }

    private func applyGlobalRate(_ verdict: GlobalRateLimiter.Verdict, _ limiter: GlobalRateLimiter) -> Bool {
        switch verdict {
        case .allowed:
            return true
        case .refused(let waitNs):
            return refuseByRate(limiter.config, waitNs: waitNs)
        case .unavailable:
            server.stats.add(WorkerStats.rateLimitStoreErrors)
            guard limiter.redis.config.onError == .deny else { return true }
            // The client hears that the limit cannot be checked; why (Redis's address, its error)
            // is for the operator (`/_health`, the log), not for every client.
            failExchange(status: 503, reason: "Service Unavailable: this route's rate limit cannot be checked right now; try again shortly",
                         fields: [(name: "Retry-After", value: "1")])
            return false
        }
    }

    /// The bucket a request counts in: a hash of its client address, of a header's value
    /// (requests without it share one), or the route's one.
    private func rateKey(_ key: RateLimitConfig.Key, header: [UInt8]) -> UInt64 {
        switch key {
        case .clientIP: return x.pointee.clientIP.withUnsafeBytes { StableHash.hash($0) }
        case .route: return 1
        case .claim: return x.pointee.claimRateKey
        case .header:
            let b = x.pointee.request.bytes
            let value = x.pointee.request.fields.first { equalsLowercase(b, $0.name, header) }?.value
            return value.map { StableHash.hash(b, $0) } ?? 2
        }
    }

    /// 429 with `Retry-After` (whole seconds, rounded up) and the IETF `RateLimit-Policy` /
    /// `RateLimit` fields. Returns false.
    private func refuseByRate(_ limit: RateLimitConfig, waitNs: UInt64) -> Bool {
        let seconds = (waitNs + 999_999_999) / 1_000_000_000
        return refuseByPolicy(.rateLimit, status: 429,
                              reason: "Too Many Requests: this route takes \(limit.rate) requests per \(limit.perMs) ms per \(limit.key); try again in \(seconds) s",
                              fields: [(name: "Retry-After", value: String(seconds)),
                                       (name: "RateLimit-Policy", value: limit.policyField),
                                       (name: "RateLimit", value: "\"route\";r=0;t=\(seconds)")])
    }

    /// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`): answered
    /// 200 with the route's CORS fields, or refused 403 saying what is not allowed. nil: not a
    /// preflight (the request goes on). Returns false: the exchange is over either way.
    private func answerPreflight(_ cors: CompiledCORS) -> Bool? {
        guard x.pointee.request.bytes.equals(x.pointee.request.method, "OPTIONS") else { return nil }
        let r = x.pointee.request
        let b = r.bytes
        guard b.equals(r.method, "OPTIONS"),
              let origin = r.fields.firstIndex(where: { $0.name.count == 6 && b.equalsIgnoringCase($0.name, "origin") }),
              let method = r.fields.firstIndex(where: { $0.name.count == 29 && b.equalsIgnoringCase($0.name, "access-control-request-method") })
        else { return nil }
        let originValue = r.fields[origin].value, methodValue = r.fields[method].value
        let requested = r.fields.first { $0.name.count == 30 && b.equalsIgnoringCase($0.name, "access-control-request-headers") }?.value
        let originText = String(decoding: b[originValue], as: UTF8.self)
        guard cors.allowsOrigin(b, originValue) else {
            return refuseByPolicy(.cors, status: 403, reason: "Forbidden: CORS preflight from origin \(originText) is not allowed on this route")
        }
        guard cors.allowsMethod(b, methodValue) else {
            return refuseByPolicy(.cors, status: 403, reason: "Forbidden: CORS preflight for method \(String(decoding: b[methodValue], as: UTF8.self)) is not allowed on this route")
        }
        if let requested, !cors.allowsHeaders(b, requested) {
            return refuseByPolicy(.cors, status: 403, reason: "Forbidden: CORS preflight asks for request headers this route does not allow (\(String(decoding: b[requested], as: UTF8.self)))")
        }
        var fields: [(name: StaticString, value: String)] = [
            (name: "Access-Control-Allow-Origin", value: cors.anyOrigin ? "*" : originText),
            (name: "Access-Control-Allow-Methods", value: cors.anyMethod ? String(decoding: b[methodValue], as: UTF8.self) : cors.allowMethods),
            (name: "Vary", value: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ]
        let allowHeaders = cors.anyHeader ? requested.map { String(decoding: b[$0], as: UTF8.self) } ?? "" : cors.allowHeaders
        if !allowHeaders.isEmpty { fields.append((name: "Access-Control-Allow-Headers", value: allowHeaders)) }
        if cors.credentials { fields.append((name: "Access-Control-Allow-Credentials", value: "true")) }
        if let maxAge = cors.maxAge { fields.append((name: "Access-Control-Max-Age", value: maxAge)) }
        answer(LocalReply(status: 200, contentType: "text/plain", body: [], fields: fields))
        return false
    }

    private func refuseByPolicy(_ refusal: RoutePolicy.Refusal, status: UInt16, reason: String,
                                fields: [(name: StaticString, value: String)] = []) -> Bool {
        server.stats.add(WorkerStats.policyRefusals + refusal.rawValue)
        if let route = x.pointee.route {
            settings.routeRefusalSlab.add(route.index * RoutePolicy.Refusal.allCases.count + refusal.rawValue)
        }
        failExchange(status: status, reason: reason, fields: fields)
        return false
    }

    /// The route's rules for the response head (`response_headers`, `security_headers`), for the
    /// downstream's head writer; nil when it has none (the usual case).
    var responsePolicy: ResponsePolicy? {
        // The flag first: a route without rules (the usual case) pays one load, not a retain.
        guard let route = x.pointee.route, route.policy.rewritesResponses else { return nil }
        let policy = route.policy
        let b = x.pointee.request.bytes
        let host = x.pointee.request.hostField.map { b[x.pointee.request.fields[$0].value] } ?? []
        var cors: ResponsePolicy.CORS?
        if let c = policy.cors {
            let origin = x.pointee.request.fields.first { $0.name.count == 6 && b.equalsIgnoringCase($0.name, "origin") }?.value
            let allowed = origin.flatMap { c.allowsOrigin(b, $0) ? Array(b[$0]) : nil }
            cors = ResponsePolicy.CORS(allowOrigin: allowed.map { c.anyOrigin ? Array("*".utf8) : $0 }, credentials: c.credentials,
                                       exposeHeaders: c.exposeHeaders)
        }
        return ResponsePolicy(rules: policy.responseHeaders, securityHeaders: policy.securityHeaders, secure: tls != nil,
                              context: .init(clientIP: x.pointee.clientIP, requestID: x.pointee.requestID, host: host), cors: cors)
    }

    /// The client's fault: the downstream answers and ends (the exchange ends with it).
    private func refuse(_ error: HTTPParseError) {
        down { $0.rejectRequest(error) }
    }

    // MARK: - Connecting

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
            if x.pointee.machine.attempts == 0 && x.pointee.queuedAt == 0 { group.balancer.retryBudget.requestStarted() }
            // A sticky cookie naming an available backend not tried yet wins over the policy (the
            // hash key is then not needed).
            let sticky = group.balancer.sticky == nil ? nil : group.balancer.stickyChoice(x.pointee.request)
                .flatMap { group.backends[$0].shared.takesStickySessions && group.backends[$0].hasRoom
                    && !x.pointee.triedBackends.contains($0) ? $0 : nil }
            let key = sticky != nil || group.balancer.hashKey == nil ? nil
                : group.balancer.key(of: x.pointee.request, target: x.pointee.forwardTarget ?? x.pointee.request.target, clientIP: x.pointee.clientIP)
            guard let index = sticky ?? group.balancer.pick(from: group.backends, excluding: x.pointee.triedBackends, key: key,
                                                            now: server.loop.now &* 1_000_000) ?? tryOneWhileAllDown(group) else {
                // Every available backend not tried yet is at its request limit: wait for room.
                if group.balance.maxConnectionsPerBackend > 0,
                   group.backends.indices.contains(where: { group.backends[$0].isAvailable && !x.pointee.triedBackends.contains($0) }) {
                    return waitInQueue(group)
                }
                let giveUp = x.pointee.machine.noBackend(anyHealthy: group.balancer.anyHealthy(group.backends),
                                                         triedAny: !x.pointee.triedBackends.isEmpty)
                if giveUp == .noHealthyBackend || x.pointee.triedWhileAllDown {
                    return failExchange(status: ExchangeMachine.GiveUp.noHealthyBackend.status,
                                        reason: "Service Unavailable: no healthy backend in upstream \(group.name)")
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
            let conn = UpstreamConnection(backend: backend, stream: server.makeUpstreamStream(for: backend))
            attach(conn, pooled: false)
            do {
                try startConnecting(conn, to: backend)
                if group.balance.sendProxyProtocol != 0 { sendProxyHeader(on: conn, version: group.balance.sendProxyProtocol) }
            } catch {
                // At a fallback address (`::1` on a machine without IPv6) a failure at once says
                // nothing about the proxy's resources: that address is unusable, move on.
                let atFallback = backend.shared.addressCount > 1 && x.pointee.connectAddressIndex != 0
                let problem = atFallback ? nil : error.localResourceProblem
                switch x.pointee.machine.connectFailed(isLocalResourceProblem: problem != nil) {
                case .localResourceExhausted: return localResourceFailure(problem!)
                case .tryNextBackend:
                    noteConnectFailure(error)
                    moveToNextAddress(of: backend.shared, index: index)
                }
                continue
            }
            let connectMs = UInt64(max(settings.config.timeouts.connectMs, 1))
            let shared = backend.shared
            x.pointee.racerFailedIndex = -1
            if shared.addressCount > 1 && x.pointee.addressMoves < shared.addressCount - 1
                && connectMs > SharedBackend.connectionAttemptDelayMs {
                // Another address to race if this one is slow (see `startRacingConnect`).
                x.pointee.raceConnectMsLeft = connectMs - SharedBackend.connectionAttemptDelayMs
                down { $0.armExchangeDeadline(inMs: SharedBackend.connectionAttemptDelayMs) }
            } else {
                x.pointee.raceConnectMsLeft = 0
                down { $0.armExchangeDeadline(inMs: connectMs) }
            }
            return
        }
    }

    /// Happy eyeballs: the connect to the backend's current address has not completed within
    /// the attempt delay (an address that drops packets rather than refusing, such as an IPv6
    /// route that leads nowhere), so its next address gets a connect too. The first to connect
    /// carries the request and its address becomes the backend's current one; the other is
    /// closed. The connect deadline still covers both (`raceConnectMsLeft`).
    private func startRacingConnect() {
        let left = x.pointee.raceConnectMsLeft
        x.pointee.raceConnectMsLeft = 0
        down { $0.armExchangeDeadline(inMs: max(left, 1)) }
        // Connected, the TLS handshake under way: that is not raced.
        if x.pointee.upstream?.stream.isTransportConnected == true { return }
        let backend = currentBackend, shared = backend.shared
        let index = (x.pointee.connectAddressIndex + 1) % shared.addressCount
        let conn = UpstreamConnection(backend: backend, stream: server.makeUpstreamStream(for: backend))
        do {
            try conn.stream.connect(to: shared.address(at: index)) { [self, conn] status in connectCompleted(conn, status) }
        } catch {
            return conn.close()  // no second attempt (out of descriptors): the first goes on alone
        }
        let proxyProtocol = currentUpstream.balance.sendProxyProtocol
        if proxyProtocol != 0 { sendProxyHeader(on: conn, version: proxyProtocol) }
        x.pointee.racingUpstream = conn
        x.pointee.racingAddressIndex = index
    }

    /// A connect this exchange started completed: the current attempt's (`x.upstream`, which a
    /// racing connect may have become) or the racing one's. Any other is stale and ignored.
    private func connectCompleted(_ conn: UpstreamConnection, _ status: Int32) {
        guard hasState else { return }
        if x.pointee.racingUpstream === conn { return racingConnectEnded(status) }
        guard x.pointee.upstream === conn else { return }
        if status == 0 { upstreamConnected() } else { connectFailed(UVError(status)) }
    }

    /// The racing connect completed first: on success it replaces the first attempt; on failure
    /// the first goes on alone, and this request will not try that address again.
    private func racingConnectEnded(_ status: Int32) {
        guard let racer = x.pointee.racingUpstream else { return }
        guard status == 0 else {
            x.pointee.racingUpstream = nil
            // That address is tried: if the first fails too, the backend moves past both.
            x.pointee.addressMoves += 1
            x.pointee.racerFailedIndex = x.pointee.racingAddressIndex
            recordConnectFailure(UVError(status), on: racer, addressIndex: x.pointee.racingAddressIndex)
            return racer.close()
        }
        currentBackend.shared.addressAnswered(x.pointee.racingAddressIndex)
        adoptRacingConnect()
        upstreamConnected()
    }

    /// The racing connection replaces the first attempt (closed) as the exchange's upstream.
    private func adoptRacingConnect() {
        guard let racer = x.pointee.racingUpstream else { return }
        x.pointee.racingUpstream = nil
        if let first = x.pointee.upstream {
            first.owner = nil
            first.close()
        }
        x.pointee.connectAddressIndex = x.pointee.racingAddressIndex
        x.pointee.upstream = racer
        racer.owner = self
    }

    /// The first attempt's address failed this request while a racing connect was out: the
    /// failure is recorded, the address is no longer the backend's current one, and it counts
    /// as tried.
    private func firstAttemptFailed(_ error: UVError) {
        recordConnectFailure(error, on: x.pointee.upstream, addressIndex: x.pointee.connectAddressIndex)
        currentBackend.shared.addressFailed(x.pointee.connectAddressIndex)
        x.pointee.addressMoves += 1
    }

    /// Closes a racing connect still pending (the exchange moved on without it).
    private func dropRacingConnect() {
        guard let racer = x.pointee.racingUpstream else { return }
        x.pointee.racingUpstream = nil
        racer.close()
    }

    /// `try_when_all_down`: with every backend down (none healthy, none tried yet by this
    /// request), one of them — in turn, skipping those the runtime API disabled — gets a connect
    /// anyway. Nil: the option is off, or there is none to try.
    private func tryOneWhileAllDown(_ group: Upstream) -> Int? {
        guard group.balance.tryWhenAllDown, x.pointee.triedBackends.isEmpty, !group.backends.isEmpty,
              !group.balancer.anyHealthy(group.backends) else { return nil }
        // The backend just refused at one address goes on at its next (not the next backend).
        if x.pointee.addressMoves > 0, group.backends.indices.contains(x.pointee.addressRetryBackend) {
            x.pointee.triedWhileAllDown = true
            return x.pointee.addressRetryBackend
        }
        let count = group.backends.count
        for step in 0..<count {
            let index = (group.allDownTurn + step) % count
            guard group.backends[index].shared.adminState == .enabled, group.backends[index].hasRoom else { continue }
            group.allDownTurn = index + 1
            x.pointee.triedWhileAllDown = true
            return index
        }
        return nil
    }

    /// `send_proxy_protocol`: the new connection starts with a PROXY header naming the client's
    /// connection (its source, after a PROXY header of its own; the address it reached). Such a
    /// connection speaks for one client, so it is not pooled for others (`releaseUpstream`).
    private func sendProxyHeader(on conn: UpstreamConnection, version: Int) {
        conn.namesOneClient = true
        guard let source = peerAddress, let destination = down({ $0.clientLocalAddress }) else {
            // No addresses to name (a test's in-memory client): the sender speaks for itself.
            return conn.stream.sendFirst(ProxyProtocol.localHeader(version: version))
        }
        conn.stream.sendFirst(ProxyProtocol.header(version: version, source: source, destination: destination))
    }

    /// Starts connecting `conn`. Out of descriptors (EMFILE), an idle pooled connection of this
    /// worker gives up its descriptor and the connect is tried again: a kept-alive connection
    /// nobody uses is worth less than a request.
    private func startConnecting(_ conn: UpstreamConnection, to backend: Backend) throws(UVError) {
        while true {
            do {
                // Strong captures (a weak one would give both objects a side table: slower ARC on
                // every request after): the closure is dropped when it runs or the stream closes.
                let shared = backend.shared
                x.pointee.connectAddressIndex = shared.addressCount == 1 ? 0 : shared.answeringIndex
                try conn.stream.connect(to: shared.address(at: x.pointee.connectAddressIndex)) { [self, conn] status in
                    connectCompleted(conn, status)
                }
                return
            } catch {
                guard error.code == UVError.tooManyOpenFiles, server.closeOldestIdleUpstream() else { throw error }
            }
        }
    }

    /// A connect failed after `uv_tcp_connect` accepted it (refused, timed out), or the connect
    /// deadline passed (`atDeadline`): try the next address or backend.
    private func connectFailed(_ error: UVError, atDeadline: Bool = false) {
        if x.pointee.racingUpstream != nil {
            firstAttemptFailed(error)
            // Failed while the other address is still being tried: that one becomes the attempt.
            if !atDeadline { return adoptRacingConnect() }
            // Neither answered within connect_ms: the next address after the racer's (a name
            // with three or more) is where this backend goes on.
            x.pointee.connectAddressIndex = x.pointee.racingAddressIndex
        }
        let problem = error.localResourceProblem
        switch x.pointee.machine.connectFailed(isLocalResourceProblem: problem != nil) {
        case .localResourceExhausted:
            localResourceFailure(problem!)
        case .tryNextBackend:
            let index = x.pointee.backendIndex
            let shared = currentBackend.shared
            noteConnectFailure(error)
            moveToNextAddress(of: shared, index: index)
            connectUpstream()
        }
    }

    /// A connect to one address of a name with several (`localhost`: ::1 after 127.0.0.1)
    /// failed: the next one becomes the backend's current address, and this request may try the
    /// backend again there — once per address.
    private func moveToNextAddress(of shared: SharedBackend, index: Int) {
        guard shared.addressCount > 1 && x.pointee.addressMoves < shared.addressCount - 1 else { return }
        shared.addressFailed(x.pointee.connectAddressIndex)
        // The racer's address, next in line, already refused this request: past it too.
        if x.pointee.racerFailedIndex >= 0 { shared.addressFailed(x.pointee.racerFailedIndex) }
        x.pointee.addressMoves += 1
        x.pointee.addressRetryBackend = index
        x.pointee.triedBackends.remove(index)
    }

    /// The proxy itself is out of a resource (descriptors, ports, memory): no backend is to
    /// blame and every other one would fail the same way, so no failover — a 503 that says so.
    private func localResourceFailure(_ problem: String) {
        releaseUpstream(reusable: false)
        failExchange(status: 503, reason: "Service Unavailable: \(problem)", fields: [(name: "Retry-After", value: "1")])
    }

    /// Records why the current backend could not be reached and lets its connection go.
    private func noteConnectFailure(_ error: UVError) {
        recordConnectFailure(error, on: x.pointee.upstream, addressIndex: x.pointee.connectAddressIndex)
        releaseUpstream(reusable: false, outcome: .connectFailure)
    }

    /// Why `conn`, dialling the current backend's address `addressIndex`, failed: the reason the
    /// 502 gives and a line of the error page's attempts.
    private func recordConnectFailure(_ error: UVError, on conn: UpstreamConnection?, addressIndex: Int) {
        let backend = currentBackend
        // A TLS backend's handshake is part of connecting: its reason says more than EPROTO.
        let tlsReason = error.code == UVError.protocolError ? (conn?.stream as? TLSStream)?.failureReason : nil
        let what = tlsReason.map { $0.hasPrefix("TLS handshake failed") ? $0 : "TLS handshake failed: \($0)" }
        // The address dialled (the backend's current one may have moved on since).
        let dialled = backend.shared.address(at: min(addressIndex, backend.shared.addressCount - 1))
        x.pointee.lastConnectFailure = "Bad Gateway: cannot connect to backend \(backend.id) (\(dialled)): \(what ?? error.name)"
        x.pointee.failedAttempts.append(ErrorPage.Attempt(backend: backend.id, url: backend.url, address: dialled.description,
                                          problem: what ?? ErrorPage.explain(error, url: backend.url)))
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
        dropRacingConnect()  // the first attempt won the race
        conn.startReading()
        x.pointee.upstreamReady = true
        x.pointee.inspection?.connectedNs = Platform.monotonicNanos()
        x.pointee.lastUpstreamActivity = server.loop.now
        x.pointee.machine.upstreamConnected()
        let t = timeouts
        let headMs = responseHeadWaitMs
        x.pointee.responseHeadDueAt = x.pointee.machine.requestComplete ? server.loop.now + UInt64(headMs) : 0
        let wait = x.pointee.machine.requestComplete ? headMs : min(headMs, t.clientBodyMs)
        down { $0.armExchangeDeadline(inMs: UInt64(max(wait, 1))) }

        x.pointee.toUpstream.removeAll()
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
                                      clientIP: x.pointee.clientIP == peerIP ? nil : x.pointee.clientIP,
                                      defaultHost: currentBackend.authorityBytes, target: x.pointee.forwardTarget,
                                      hostOverride: hostOverride, forwardedPrefix: x.pointee.route?.forwardedPrefix ?? [],
                                      upgrade: x.pointee.machine.wantsUpgrade, requestID: x.pointee.requestID,
                                      secure: tls != nil, rules: x.pointee.route?.policy.requestHeaders, extraFields: x.pointee.claimFields,
                                      into: &x.pointee.toUpstream)
        if !x.pointee.machine.requestComplete {
            // Body bytes that arrived before the connection go out behind the head.
            down { $0.upstreamReadyForBody() }
            guard hasState && isRunning else { return }  // the exchange ended meanwhile
        }
        flushToUpstream()
    }

    // MARK: - Request body

    /// Request body bytes, the client's framing removed. The first go out together with the head.
    func sendRequestBody(_ data: UnsafeRawBufferPointer) {
        x.pointee.inspection?.requestBodyBytes(data)
        if x.pointee.request.framing == .chunked {
            x.pointee.toUpstream.appendHex(data.count)
            x.pointee.toUpstream.append("\r\n")
            x.pointee.toUpstream.append(raw: data)
            x.pointee.toUpstream.append("\r\n")
        } else {
            flushToUpstream(extra: data)
        }
    }

    /// Writes request body bytes appended by `sendRequestBody` (chunk framing) and not yet sent.
    func flushRequestBody() {
        if !x.pointee.toUpstream.isEmpty { flushToUpstream() }
    }

    /// The request body is complete.
    func endRequestBody() {
        x.pointee.inspection?.requestBodyComplete = true
        if x.pointee.request.framing == .chunked { x.pointee.toUpstream.append("0\r\n\r\n") }
        flushRequestBody()
        x.pointee.machine.requestBodyFinished()
        x.pointee.lastUpstreamActivity = server.loop.now
        if !x.pointee.machine.responseStarted { x.pointee.responseHeadDueAt = server.loop.now + UInt64(responseHeadWaitMs) }
    }

    /// How long one try waits for its response head: `timeouts.upstream_ms`, or the upstream's
    /// `retries.per_try_timeout_ms` when set and shorter.
    private var responseHeadWaitMs: Int {
        // Only a try that a timeout could send elsewhere gets the shorter deadline: an upload (or
        // a request out of retries) keeps the whole `upstream_ms`. (Fields read one by one: a copy
        // of the balancer would retain every array in it.)
        let group = currentUpstream
        let perTry = group.balancer.perTryTimeoutMs
        guard perTry > 0, x.pointee.machine.mayRetry(maxRetries: group.balancer.retryAttempts) else {
            return timeouts.upstreamMs
        }
        return min(perTry, timeouts.upstreamMs)
    }

    /// Sticky sessions: a response from another backend than the request's cookie names (or to a
    /// request without one) carries the cookie naming the backend that answered.
    private func addStickyCookieIfNeeded() {
        guard x.pointee.backendIndex >= 0 else { return }
        let group = currentUpstream
        guard group.balancer.sticky != nil, group.balancer.stickyChoice(x.pointee.request) != x.pointee.backendIndex else { return }
        let cookie = group.balancer.stickyCookie(for: x.pointee.backendIndex)
        let nameStart = x.pointee.response.bytes.count
        x.pointee.response.bytes.append("Set-Cookie")
        let valueStart = x.pointee.response.bytes.count
        x.pointee.response.bytes.append(contentsOf: cookie)
        x.pointee.response.fields.append(HeaderField(name: nameStart..<valueStart, value: valueStart..<x.pointee.response.bytes.count))
    }

    // MARK: - The queue (`max_connections_per_backend`)

    /// Waits in `group`'s queue until a backend has room (`resumeFromQueue`), `queue.timeout_ms`
    /// passes (503) or the queue is full (503 at once).
    private func waitInQueue(_ group: Upstream) {
        let finished = exchangesFinished
        let ticket = group.enqueue { [weak self] in
            guard let self, self.hasState, self.isRunning, self.exchangesFinished == finished, self.x.pointee.queueTicket != 0 else {
                return .gone
            }
            // Only room this request can use wakes it (not a backend it already tried, or one
            // that is unavailable now); otherwise it keeps its place.
            let tried = self.x.pointee.triedBackends
            guard group.backends.canTakeAny(tried) else { return .notNow }
            self.x.pointee.queueTicket = 0
            self.connectUpstream()
            return .resumed
        }
        guard let ticket else {
            return failExchange(status: 503, reason: "Service Unavailable: every backend of upstream \(group.name) is at max_connections_per_backend (\(group.balance.maxConnectionsPerBackend)) and its queue is full (queue.max \(group.balance.queue.max))",
                                fields: [("Retry-After", "1")])
        }
        x.pointee.queueTicket = ticket
        // A request queued again (woken, then beaten to the room) keeps its first time.
        if x.pointee.queuedAt == 0 { x.pointee.queuedAt = server.loop.now }
        let waited = server.loop.now &- x.pointee.queuedAt
        let timeout = UInt64(group.balance.queue.timeoutMs)
        down { $0.armExchangeDeadline(inMs: timeout > waited ? timeout - waited : 1) }
    }

    private func wakeWaiters(_ group: Upstream, _ backend: Backend) {
        if group.waitingCount > 0 { group.resumeWaiting() }
        if let latest = backend.latestUpstream, latest !== group, latest.waitingCount > 0 { latest.resumeWaiting() }
    }

    /// Leaves the queue (the exchange ends, or its wait timed out).
    private func leaveQueue() {
        guard x.pointee.queueTicket != 0 else { return }
        currentUpstream.dequeue(x.pointee.queueTicket)
        x.pointee.queueTicket = 0
    }

    // MARK: - Retries

    /// A try failed after the request went out, in a way `retries.on` may name: sends the request
    /// to another backend if the policy, the exchange (`mayRetry`), an untried available backend
    /// and the budget all allow it. `outcome`: what passive health and p2c learn of the failed try.
    private func retryElsewhere(_ condition: RetryCondition, problem: String, outcome: AttemptOutcome) -> Bool {
        let group = currentUpstream
        let policy = group.balancer.retries
        guard policy.attempts > 0, policy.on.contains(condition), x.pointee.machine.mayRetry(maxRetries: policy.attempts),
              x.pointee.machine.mayAttempt(maxAttempts: settings.config.limits.maxUpstreamAttempts),
              group.backends.canTakeAny(x.pointee.triedBackends) else { return false }
        guard group.balancer.retryBudget.withdraw(now: Platform.monotonicNanos()) else {
            group.retryStats.add(SharedUpstream.retriesOverBudget)
            return false
        }
        group.retryStats.add(RetryCondition.allCases.firstIndex(of: condition)!)
        if x.pointee.backendIndex >= 0 {
            let b = currentBackend
            x.pointee.failedAttempts.append(ErrorPage.Attempt(backend: b.id, url: b.url, address: b.address.description, problem: problem))
        }
        let failed = x.pointee.backendIndex >= 0 ? currentBackend : nil
        releaseUpstream(reusable: false, outcome: outcome, wake: false)
        x.pointee.machine.retryStarted()
        x.pointee.responseHeadBytes.reset()
        x.pointee.upstreamHeadNs = 0
        connectUpstream()
        if let failed, failed.requestLimit > 0 { wakeWaiters(group, failed) }
        return true
    }

    /// The request body cannot be completed (malformed, too large): what the upstream got of it
    /// spoils that connection. The downstream answers the client.
    func requestBodyFailed() {
        x.pointee.machine.upstreamSpoiled()
        releaseUpstream(reusable: false)
    }

    /// Sends `toUpstream` (and `extra`) as one write; stops the request body while the upstream's
    /// queue is over its high-water mark.
    private func flushToUpstream(extra: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        guard x.pointee.upstreamReady, let conn = x.pointee.upstream else { return }
        if x.pointee.toUpstream.isEmpty && extra.isEmpty { return }
        x.pointee.toUpstream.withUnsafeBytes { head in conn.write(head, extra) }
        x.pointee.toUpstream.removeAll()
        if conn.isCongested && !x.pointee.requestBodyPaused {
            x.pointee.requestBodyPaused = true
            down { $0.pauseRequestBody() }
        }
    }

    /// The timeouts of the current exchange: its route's (asked for only once a route matched).
    private var timeouts: TimeoutsConfig { x.pointee.route?.timeouts ?? settings.config.timeouts }

    // MARK: - Upstream input
    //
    // The upstream connection calls these through `UpstreamConnectionDelegate`, a protocol
    // witness that knows no `Downstream`: without `@_specialize` each call ran the unspecialised
    // generic body, looking up generic metadata at every step (~2,800 instructions per request).

    @_specialize(where Downstream == HTTP1ServerConnection<TCPStream>)
    func upstreamRead(_ bytes: UnsafeRawBufferPointer) {
        x.pointee.lastUpstreamActivity = server.loop.now
        let exchange = exchangesFinished
        var input = bytes
        while !input.isEmpty {
            if x.pointee.machine.responseStarted && x.pointee.responseFraming == .untilClose {
                relayResponseBody(input)
                if x.pointee.compressor != nil && isRunning { flushResponse() }
                return
            }
            if !x.pointee.machine.responseStarted {
                do {
                    guard try x.pointee.responseHeadBytes.take(from: &input, completingInto: &x.pointee.response.bytes) else { return }
                } catch {
                    return malformedResponseHead(error)
                }
                do {
                    try HeadParser.parseResponse(into: &x.pointee.response, requestWasHEAD: x.pointee.request.isHEAD)
                } catch {
                    return malformedResponseHead(error)
                }
                if x.pointee.response.isInterim {
                    let maxInterim = settings.config.limits.maxInterimResponses
                    switch x.pointee.machine.interimResponse(maxInterim: maxInterim, clientVersionMinor: x.pointee.request.versionMinor) {
                    case .refuse:
                        return upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent more than \(maxInterim) interim (1xx) responses")
                    case .relay:
                        // 100 Continue / 103 Early Hints; the final head follows.
                        x.pointee.machine.responseBytesSent()
                        down { $0.sendInterimResponse(x.pointee.response) }
                        x.pointee.machine.interimRelayed()
                        pauseUpstreamIfClientCongested()
                    case .drop:
                        break
                    }
                    x.pointee.responseHeadBytes.reset()
                    continue
                }
                let status = x.pointee.response.status
                if status >= 502 && status <= 504,
                   retryElsewhere(status == 502 ? .status502 : status == 503 ? .status503 : .status504,
                                  problem: "answered \(status) \(StatusText.reason(status))", outcome: .response(status: status)) {
                    return
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
                    return switchProtocols(rest: input)
                case .relay:
                    startResponse()
                }
                if responseHasNoBody {
                    // Bytes after a body-less response break framing: never reuse that connection.
                    if !input.isEmpty { x.pointee.machine.upstreamSpoiled() }
                    return endResponse()
                }
                continue
            }
            let consumed = relayResponseBody(input)
            if exchangesFinished != exchange || !isRunning { return }
            input = UnsafeRawBufferPointer(rebasing: input[consumed...])
        }
        if isRunning && x.pointee.machine.responseStarted { flushResponse() }
    }

    /// A response head the accumulator or the parser refused: one message, whichever found it
    /// (that depends on how the head was cut into reads), without a second "Bad Gateway:".
    private func malformedResponseHead(_ error: HTTPParseError) {
        let detail = error.reason.hasPrefix("Bad Gateway: ") ? String(error.reason.dropFirst(13)) : error.reason
        upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent a malformed response head (\(detail))")
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

    /// The final response head arrived: set up the body relay and hand the head to the sink.
    private func startResponse() {
        x.pointee.lastUpstreamActivity = server.loop.now
        x.pointee.responseIdleLimitMs = UInt64(x.pointee.response.isEventStream ? timeouts.eventStreamIdleMs : timeouts.responseIdleMs)
        // Only ever sooner: a nearer deadline (the client's body pauses) must keep its time.
        down { $0.advanceExchangeDeadline(inMs: x.pointee.responseIdleLimitMs) }
        x.pointee.responseFraming = x.pointee.response.framing
        switch x.pointee.response.framing {
        case .none: break
        case .contentLength(let n): x.pointee.responseBodyRemaining = n
        case .chunked, .untilClose: x.pointee.responseDecoder.reset()
        }
        let closeAfter = x.pointee.machine.closeAfterResponse
        addStickyCookieIfNeeded()
        x.pointee.inspection?.response(x.pointee.response)
        x.pointee.compressor = nil
        var clientFraming = x.pointee.responseFraming
        if let compression = x.pointee.route?.compression {
            if x.pointee.response.status == 304 {
                try? ResponseCompression.rewrite(&x.pointee.response, compression.notModifiedDecision(x.pointee.request, x.pointee.response), headOnly: true)
            } else if !responseHasNoBody || x.pointee.request.isHEAD {
                // HEAD too: it is told it varies as its GET would be (never compressed itself).
                clientFraming = prepareCompression(compression)
                if let compressor = x.pointee.compressor { x.pointee.inspection?.compressedAs = compressor.coding.token }
            }
        }
        down { $0.sendResponseHead(&x.pointee.response, framing: clientFraming, closeAfter: closeAfter) }
    }

    /// Decides whether the response is compressed (`ResponseCompression`) and rewrites its head
    /// for the client; returns the framing the client side then uses (chunked when compressed:
    /// the length is not known until the end).
    private func prepareCompression(_ compression: ResponseCompression) -> BodyFraming {
        var decision = compression.decide(x.pointee.request, x.pointee.response)
        if let coding = decision.coding {
            let sizeHint: UInt64? = if case .contentLength(let n) = x.pointee.responseFraming { n } else { nil }
            if server.compressorsInUse < compression.config.maxStreams,
               let compressor = compression.makeCompressor(coding, sizeHint: sizeHint, onRelease: { [unowned server] in server.compressorsInUse -= 1 }) {
                server.compressorsInUse += 1
                x.pointee.compressor = compressor
            } else {
                decision.coding = nil  // at the limit (or out of memory): sent as it is
            }
        }
        do {
            try ResponseCompression.rewrite(&x.pointee.response, decision)
        } catch {
            // Not expected (the head was valid before): send it unchanged rather than fail it.
            x.pointee.compressor = nil
            return x.pointee.responseFraming
        }
        return x.pointee.compressor != nil ? .chunked : x.pointee.responseFraming
    }

    /// Compresses body bytes into the client's buffer; `step` `.flush` and `.finish` make them
    /// decodable now (the sink's own flush or end follows).
    private func compressResponseBody(_ compressor: StreamCompressor, _ data: UnsafeRawBufferPointer, _ step: StreamCompressor.Step) {
        compressor.compress(data, step) { piece in down { $0.appendResponseBody(piece) } }
    }

    /// The final response has no body: its head is all of it.
    private var responseHasNoBody: Bool {
        switch x.pointee.responseFraming {
        case .none, .contentLength(0): true
        default: false
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
            sendResponseBody(UnsafeRawBufferPointer(rebasing: input[..<take]))
            if x.pointee.responseBodyRemaining == 0 {
                if take < input.count { x.pointee.machine.upstreamSpoiled() }  // bytes beyond the declared length
                endResponse()
            }
            return take
        case .chunked:
            let consumed: Int
            do {
                if x.pointee.compressor != nil || x.pointee.inspection != nil {
                    consumed = try x.pointee.responseDecoder.decode(input) { data throws(HTTPParseError) in
                        x.pointee.inspection?.responseBodyBytes(data)
                        if let compressor = x.pointee.compressor {
                            compressResponseBody(compressor, data, .process)
                        } else {
                            down { $0.appendResponseBody(data) }
                        }
                    }
                } else {
                    consumed = try x.pointee.responseDecoder.decode(input) { data throws(HTTPParseError) in
                        down { $0.appendResponseBody(data) }
                    }
                }
            } catch {
                switch x.pointee.machine.malformedResponseBody() {
                case .answer:
                    // The head arrived in this same read and is still held back: nothing reached
                    // the client, so it can still get a proper 502.
                    down { $0.discardBufferedResponse() }
                    upstreamFailed(status: 502, reason: "Bad Gateway: backend \(backendID) sent a malformed chunked body (\(error.reason))")
                case .cutClient:
                    releaseUpstream(reusable: false, outcome: .upstreamFailure)
                    cutClient()
                }
                return input.count
            }
            if x.pointee.responseDecoder.isComplete {
                if consumed < input.count { x.pointee.machine.upstreamSpoiled() }  // bytes beyond the last chunk
                endResponse()
            } else {
                flushResponse()
            }
            return consumed
        case .untilClose:
            sendResponseBody(input)
            return input.count
        case .none:
            return 0
        }
    }

    private func sendResponseBody(_ data: UnsafeRawBufferPointer) {
        x.pointee.machine.responseBytesSent()
        x.pointee.inspection?.responseBodyBytes(data)
        if let compressor = x.pointee.compressor {
            // Flushed at the end of each read (`flushResponse`), not per piece.
            compressResponseBody(compressor, data, .process)
        } else {
            down { $0.sendResponseBody(data) }
        }
        pauseUpstreamIfClientCongested()
    }

    /// Writes what is buffered for the client. A compressed body is sync-flushed first, so a
    /// streamed response (an event per read) reaches the client as it comes, not when the
    /// coder's block fills.
    private func flushResponse() {
        x.pointee.machine.responseBytesSent()
        if let compressor = x.pointee.compressor {
            // A body of known length is not a stream: the coder keeps its block (better ratio).
            if case .contentLength = x.pointee.responseFraming {} else {
                compressResponseBody(compressor, UnsafeRawBufferPointer(start: nil, count: 0), .flush)
            }
            if compressor.failed { return compressionFailed() }
        }
        down { $0.flushResponse() }
        pauseUpstreamIfClientCongested()
    }

    /// The coder failed (out of memory): what the client got cannot be completed, so it is cut
    /// rather than ended as if whole.
    private func compressionFailed() {
        server.warnAtMostEverySecond("compressing a response from backend \(backendID) failed (out of memory?): the client's response was cut")
        x.pointee.compressor = nil
        releaseUpstream(reusable: false)
        cutClient()
    }

    /// The response is complete: the sink ends it, the exchange finishes.
    private func endResponse() {
        x.pointee.machine.responseBytesSent()
        if let compressor = x.pointee.compressor {
            compressResponseBody(compressor, UnsafeRawBufferPointer(start: nil, count: 0), .finish)
            if compressor.failed { return compressionFailed() }
            x.pointee.compressor = nil
        }
        down { $0.endResponse() }
        finishExchange()
    }

    /// Backpressure towards the backend: a client that reads slowly stops the upstream's reading.
    @inline(__always)
    private func pauseUpstreamIfClientCongested() {
        guard !x.pointee.upstreamReadPaused, down({ $0.isResponseCongested }), let conn = x.pointee.upstream else { return }
        x.pointee.upstreamReadPaused = true
        conn.stream.pauseReading(.backpressure)
    }

    /// The client has room again: read the backend again.
    func responseSinkDrained() {
        guard hasState else { return }
        resumeUpstreamReading()
    }

    /// Lifts both pauses the exchange may have put on its two sides.
    private func liftPauses() {
        resumeUpstreamReading()
        resumeRequestBody()
    }

    private func resumeUpstreamReading() {
        guard x.pointee.upstreamReadPaused else { return }
        x.pointee.upstreamReadPaused = false
        x.pointee.upstream?.stream.resumeReading(.backpressure)
    }

    private func resumeRequestBody() {
        guard x.pointee.requestBodyPaused else { return }
        x.pointee.requestBodyPaused = false
        x.pointee.requestBodyResumedAt = server.loop.now
        down { $0.resumeRequestBody() }
    }

    /// The upstream closed or failed.
    @_specialize(where Downstream == HTTP1ServerConnection<TCPStream>)
    func upstreamEnded(_ code: Int32) {
        guard isRunning else { return }
        switch x.pointee.machine.upstreamClosed(eof: code == UVError.eof, bodyUntilClose: x.pointee.responseFraming == .untilClose,
                                                 sawResponseBytes: !x.pointee.responseHeadBytes.bytes.isEmpty) {
        case .responseComplete:
            // The normal end of a close-delimited body.
            return endResponse()
        case .retryOnNewConnection:
            // The keep-alive race: a pooled connection died before answering.
            server.stats.add(WorkerStats.retries)
            // Only this backend may be picked again (its stale connection was not its failure);
            // one that failed an earlier try of this request stays excluded.
            if x.pointee.backendIndex >= 0 { x.pointee.triedBackends.remove(x.pointee.backendIndex) }
            let group = currentUpstream
            let backend = x.pointee.backendIndex >= 0 ? currentBackend : nil
            // Its own slot first: a waiter woken now could take it and send this request to the back.
            releaseUpstream(reusable: false, wake: false)
            connectUpstream()
            if let backend, backend.requestLimit > 0 { wakeWaiters(group, backend) }
            return
        case .failed:
            break
        }
        // A TLS backend's failure (an alert: a refused client certificate, a broken record) says more than EPROTO.
        let tlsReason = code == UVError.protocolError ? (x.pointee.upstream?.stream as? TLSStream)?.failureReason : nil
        let reason = code == UVError.eof
            ? "Bad Gateway: backend \(backendID) closed the connection before a complete response"
            : "Bad Gateway: backend \(backendID) failed: \(tlsReason.map { "TLS: \($0)" } ?? UVError(code).name)"
        if retryElsewhere(.reset, problem: reason, outcome: .upstreamFailure) { return }
        upstreamFailed(status: 502, reason: reason)
    }

    /// A write to the upstream failed: the backend stopped reading — typically it answered early
    /// (413, 401) and closed. What it sent is still read and relayed; the read side (its end, or
    /// the upstream deadline) decides how the exchange ends. Request body bytes from here on are
    /// read from the client and dropped (the stream ignores writes after a failure).
    @_specialize(where Downstream == HTTP1ServerConnection<TCPStream>)
    func upstreamWriteFailed(_ code: Int32) {
        guard isRunning else { return }
        x.pointee.machine.upstreamSpoiled()
    }

    @_specialize(where Downstream == HTTP1ServerConnection<TCPStream>)
    func upstreamDrained() {
        guard isRunning else { return }
        resumeRequestBody()
    }

    /// The backend accepted the protocol switch: the downstream relays its 101 and joins the
    /// two connections; the exchange keeps the upstream only to close it at the end.
    private func switchProtocols(rest: UnsafeRawBufferPointer) {
        guard let conn = x.pointee.upstream else { return }
        liftPauses()
        x.pointee.machine.tunnelStarted()
        x.pointee.machine.responseBytesSent()
        if let recorder = x.pointee.inspection {
            recorder.tunnel = true
            recorder.response(x.pointee.response)
        }
        down { $0.switchProtocols(x.pointee.response, upstream: conn, rest: rest) }
    }

    /// The upstream broke the exchange: answer 502/504 if nothing was sent yet, else cut the client.
    private func upstreamFailed(status: UInt16, reason: String) {
        if x.pointee.backendIndex >= 0 {
            let b = currentBackend
            x.pointee.failedAttempts.append(ErrorPage.Attempt(backend: b.id, url: b.url, address: b.address.description, problem: reason))
        }
        releaseUpstream(reusable: false, outcome: status == 504 ? .timeout : .upstreamFailure)
        switch x.pointee.machine.upstreamFailed() {
        case .cutClient: cutClient()
        case .answer: failExchange(status: status, reason: reason)
        }
    }

    private func cutClient() {
        down { $0.cutResponse() }
    }

    // MARK: - Deadlines

    /// The deadline the downstream keeps for the exchange is due: a connect that took too long,
    /// or one of the deadlines of a request in flight (`checkDeadlines`).
    func deadlineReached() {
        guard hasState && isRunning else { return }
        if x.pointee.queueTicket != 0 {
            let group = currentUpstream
            let waited = server.loop.now &- x.pointee.queuedAt
            if waited < UInt64(group.balance.queue.timeoutMs) {
                return down { $0.armExchangeDeadline(inMs: UInt64(group.balance.queue.timeoutMs) - waited) }
            }
            leaveQueue()
            return failExchange(status: 503, reason: "Service Unavailable: waited \(waited) ms for room on a backend of upstream \(group.name) (max_connections_per_backend \(group.balance.maxConnectionsPerBackend), queue.timeout_ms \(group.balance.queue.timeoutMs))",
                                fields: [("Retry-After", "1")])
        }
        if x.pointee.upstream != nil && !x.pointee.upstreamReady {
            if x.pointee.raceConnectMsLeft > 0 && x.pointee.racingUpstream == nil { return startRacingConnect() }
            return connectFailed(UVError(UVError.timedOut), atDeadline: true)
        }
        let now = server.loop.now
        // A client slow to read its response is not the backend's silence.
        if x.pointee.machine.responseStarted && down({ $0.isResponseCongested }) { x.pointee.lastUpstreamActivity = now }
        let t = timeouts
        let verdict = x.pointee.machine.checkDeadlines(
            // Time the proxy itself held the request body back (its backend not reading) is not
            // the client's stall: while paused the clock stands still, and it restarts at the resume
            // (the deadline can fire before the client's next read is delivered).
            ExchangeMachine.Clock(now: now, lastClientActivity: x.pointee.requestBodyPaused
                                      ? now : max(down { $0.lastRequestActivity }, x.pointee.requestBodyResumedAt),
                                  lastUpstreamActivity: x.pointee.lastUpstreamActivity, responseHeadDueAt: x.pointee.responseHeadDueAt),
            ExchangeMachine.Limits(clientBodyMs: UInt64(t.clientBodyMs), upstreamMs: UInt64(t.upstreamMs),
                                   responseIdleMs: x.pointee.responseIdleLimitMs))
        switch verdict {
        case .rearm(let ms):
            down { $0.armExchangeDeadline(inMs: ms) }
        case .requestBodyStalled(.answer):
            refuse(HTTPParseError(status: 408, reason: "the request body stalled for \(t.clientBodyMs) ms"))
        case .requestBodyStalled(.cutClient):
            cutClient()  // the response has begun: all the client can be told is a cut
        case .responseStalled:
            releaseUpstream(reusable: false, outcome: .timeout)
            cutClient()
        case .responseHeadTimedOut:
            let waited = responseHeadWaitMs
            let reason = "Gateway Timeout: backend \(backendID) did not send a response head within \(waited) ms"
                + (waited < t.upstreamMs ? " (retries.per_try_timeout_ms)" : "")
            if retryElsewhere(.timeout, problem: reason, outcome: .timeout) { return }
            upstreamFailed(status: 504, reason: reason)
        }
    }

    // MARK: - Ending

    /// Sends an error response for the current request and ends the exchange.
    private func failExchange(status: UInt16, reason: String, fields: [(name: StaticString, value: String)] = []) {
        leaveQueue()
        x.pointee.inspection?.error = reason
        if status == 405 || status == 413 { server.stats.add(WorkerStats.rejectionIndex(status)) }
        releaseUpstream(reusable: false)
        let reply: LocalReply
        if status >= 502 && status <= 504 {
            // RFC 9209: says the proxy, not the backend, made this answer, and why (the down
            // page's script looks for it to know when the backend answers again).
            var fields = fields
            let unreachable = reason.hasPrefix("Service Unavailable: no healthy backend") || reason.hasPrefix("Bad Gateway: cannot connect")
            let kind: String
            if reason.hasPrefix("Service Unavailable: no healthy backend") {
                kind = "destination_unavailable"
            } else if reason.hasPrefix("Bad Gateway: cannot connect") {
                kind = reason.contains("TLS") ? "tls_protocol_error" : reason.contains("ETIMEDOUT") ? "connection_timeout" : "connection_refused"
            } else if status == 504 {
                kind = "http_response_timeout"
            } else if status == 502 {
                kind = "http_protocol_error"
            } else {
                kind = "proxy_internal_response"  // a policy's or the proxy's own 503
            }
            fields.append((name: "Proxy-Status", value: "swift-proxy; error=\(kind)"))
            if ErrorPage.wanted(by: x.pointee.request) {
                let routed = routedUpstream
                let unhealthy = status == 503 ? (routed?.backends ?? []).map { b in (b.id, b.url, b.shared.probeRecord.lastError) } : []
                // Only a backend that could not be reached is worth watching for: a GET that
                // timed out or broke is not re-sent by the page.
                let page = ErrorPage.html(status: status, reason: reason, upstream: routed?.name ?? "none", route: x.pointee.route?.description ?? "none",
                                          attempts: x.pointee.failedAttempts, unhealthy: unhealthy,
                                          reloads: unreachable && (x.pointee.request.isHEAD || x.pointee.request.bytes.equals(x.pointee.request.method, "GET")))
                reply = LocalReply(status: status, contentType: "text/html; charset=utf-8", body: page, fields: fields)
            } else {
                reply = .text(status, reason, fields: fields)
            }
        } else {
            reply = .text(status, reason, fields: fields)
        }
        answer(reply)
    }

    /// Answers the request with the proxy's own reply and ends the exchange; the connection is
    /// kept only if nothing of the request is left unread (a body is never read for it).
    private func answer(_ reply: LocalReply) {
        x.pointee.responseStatus = reply.status
        x.pointee.inspection?.localReply(reply)
        let keepAlive = x.pointee.machine.keepAliveAfterLocalAnswer(clientKeepAlive: x.pointee.request.keepAlive,
                                                                    draining: server.isDraining)
        x.pointee.machine.responseBytesSent()
        down { $0.sendLocalReply(reply, keepAlive: keepAlive) }
        x.pointee.machine.answeredLocally(keepAlive: keepAlive)
        finishExchange()
    }

    /// The response is complete: count it, release the upstream, let the downstream go on.
    private func finishExchange() {
        recordExchange()
        exchangesFinished &+= 1
        // Only a response relayed from the upstream still held says anything about pooling it: after
        // a local answer or a failure (the upstream already released) `response` may be stale or
        // half-parsed, its field indices pointing past its fields.
        let reusable = x.pointee.upstream != nil
            && x.pointee.machine.upstreamMayBePooled(responseKeepAlive: x.pointee.response.keepAlive,
                                                      responseBodyUntilClose: x.pointee.responseFraming == .untilClose)
        releaseUpstream(reusable: reusable, backendKeepAliveMs: reusable ? keepAliveTimeoutMs(x.pointee.response) : nil,
                        outcome: .response(status: x.pointee.responseStatus))
        isRunning = false
        down { $0.exchangeEnded() }
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

    /// Gives the upstream connection back to its pool (or closes it), lifts the exchange's
    /// pauses, and tells the balancer how the attempt ended (`outcome`: not the backend's doing
    /// unless said).
    /// `wake`: a request waiting for room may take this backend's slot now (false when this
    /// exchange tries again at once: it wakes waiters itself afterwards).
    func releaseUpstream(reusable: Bool, backendKeepAliveMs: UInt64? = nil, outcome: AttemptOutcome = .notTheBackend, wake: Bool = true) {
        guard hasState else { return }
        liftPauses()
        dropRacingConnect()
        if let conn = x.pointee.upstream {
            x.pointee.upstream = nil
            conn.owner = nil
            if reusable && !conn.isClosed && !conn.namesOneClient {
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
            let backend = group.backends[x.pointee.backendIndex]
            group.balancer.finished(x.pointee.backendIndex, of: group.backends, outcome: outcome, headMicros: headMicros,
                                    now: server.loop.now &* 1_000_000)
            x.pointee.backendIndex = -1
            // Room on that backend: the oldest waiting request that can use it goes on (in this
            // configuration's queue, and in the newest one's after a reload).
            if wake && backend.requestLimit > 0 { wakeWaiters(group, backend) }
        }
        x.pointee.upstreamReady = false
    }

    /// The downstream ends the exchange from its side (it refused the request, the client went,
    /// the server shuts down): count it, close the upstream.
    func abandon() {
        guard hasState else { return }
        leaveQueue()
        recordExchange()
        releaseUpstream(reusable: false)
        isRunning = false
        // A callback of this exchange still out (a Redis lease) must not resume the next one
        // on this object (an HTTP/2 stream is reused).
        exchangesFinished &+= 1
    }

    // MARK: - Accounting

    /// A request begins to count: `parsed` says whether its head can be read for the log.
    func beginAccounting(parsed: Bool) {
        x.pointee.exchangeOpen = true
        x.pointee.requestParsed = parsed
        x.pointee.route = nil
        if !x.pointee.claimFields.isEmpty { x.pointee.claimFields.removeAll() }
        x.pointee.claimRateKey = 3
        x.pointee.waitedForKeys = false
        x.pointee.triedWhileAllDown = false
        x.pointee.addressMoves = 0
        x.pointee.servedBy = -1
        x.pointee.responseStatus = 0
        x.pointee.upstreamHeadNs = 0
    }

    /// Counts the exchange in the metrics (its backend's, its upstream's when no backend took
    /// it, else the proxy's own) and writes its access log line. Once per exchange.
    func recordExchange() {
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
        if let recorder = x.pointee.inspection {
            x.pointee.inspection = nil
            finishInspection(recorder, backend: backend)
        }
        guard let log = server.accessLog else { return }
        log.write(AccessLogEntry(client: x.pointee.clientIP.isEmpty ? peerIP : x.pointee.clientIP, requestParsed: x.pointee.requestParsed, status: status,
                                 bytesSent: down { $0.responseBytesSent }, durationMicros: micros,
                                 upstreamMicros: upstreamMicros, requestID: x.pointee.requestParsed ? x.pointee.requestID : []),
                  upstream: routed, backend: backend, tls: tls, request: &x.pointee.request)
    }

    // MARK: - The request inspector

    /// Starts recording the request (`inspect.enabled`): it is listed as in flight from now on.
    /// A replay (`InspectorReplay`) from a loopback client names its original in `X-Inspect-Replay`.
    private func beginInspection() {
        let store = server.metrics.inspector
        var replayOf: UInt64? = nil
        if let i = x.pointee.request.fieldIndex("x-inspect-replay") {
            replayOf = store.replayOf(x.pointee.request.bytes.string(x.pointee.request.fields[i].value))
        }
        let config = settings.config.inspect
        x.pointee.inspection = InspectionRecorder(seq: 0, request: x.pointee.request, target: x.pointee.request.target,
                                                  scheme: tls != nil ? "https" : "http", startNs: x.pointee.requestStartNs,
                                                  replayOf: replayOf, maxBodyBytes: config.maxBodyBytes)
        // Only copy as curl of an absolute-form request needs the address reached (a system call).
        let target = x.pointee.request.target
        if !target.isEmpty, x.pointee.request.bytes[target.lowerBound] != UInt8(ascii: "/"), x.pointee.request.bytes[target.lowerBound] != UInt8(ascii: "*"),
           let local = down({ $0.clientLocalAddress }) {
            x.pointee.inspection?.localAuthority = local.description
        }
    }

    /// The exchange is over: its recording goes to the store, complete.
    private func finishInspection(_ recorder: InspectionRecorder, backend: Backend?) {
        for a in x.pointee.failedAttempts { recorder.attempts.append(.init(backend: a.backend, outcome: a.problem)) }
        if let backend, recorder.fromBackend { recorder.attempts.append(.init(backend: backend.id, outcome: "response \(recorder.status)")) }
        // Refused by the connection (a bad path, a stalled body): the status it answered with.
        if recorder.status == 0 { recorder.status = x.pointee.responseStatus }
        if recorder.seq == 0 { recorder.seq = server.metrics.inspector.takeSeq() }  // refused before it was listed
        let done = recorder.finish(backend: backend?.id ?? "", upstreamStartNs: x.pointee.upstreamStartNs, upstreamHeadNs: x.pointee.upstreamHeadNs,
                                   endNs: Platform.monotonicNanos())
        server.metrics.inspector.finish(done, worker: server.worker, limits: settings.config.inspect)
    }
}
