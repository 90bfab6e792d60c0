/// One `GET` of a small document over HTTP/1.1, with TLS for `https://`: what the supervisor
/// uses to fetch a JWKS. It looks the host up off the loop (`HostResolver`), tries its
/// addresses in order until one connects, sends `Connection: close`, reads at most `maxBytes`
/// of body, and parses the answer with the proxy's own response parser (`HeadParser`,
/// `ChunkedDecoder`). Only a 200 with a complete body counts; redirects are not followed.
///
/// Bounded: one deadline (`timeoutMs`) covers the lookup, connecting, the handshake and reading,
/// and each address gets its share of it to connect (an address that drops packets does not
/// stop the next from being tried); the body is taken in as it arrives (each byte parsed once);
/// the completion runs exactly once, on the loop, never from inside `start` — unless `cancel()`
/// came first, after which it never runs.
///
/// Ownership: the caller keeps the fetch until the completion has run (or it cancels it); the
/// fetch closes every handle it opened before calling back. Threading: one loop.
final class DocumentFetch {
    struct Request {
        var host: String
        var port: UInt16
        var target: String
        /// nil: cleartext.
        var tls: TLSContext?
        var timeoutMs: Int
        var maxBytes: Int
        /// The config's `resolver` servers (nil: the system resolver).
        var servers: DNSServers? = nil
        /// The media type asked for (`Accept`).
        var accept = "application/json"
        /// A whole request to send instead of the `GET` (the inspector's replay), with any
        /// status accepted as an answer and its body counted, not kept.
        var raw: [UInt8]? = nil
        var rawIsHEAD = false
    }

    private let loop: EventLoop
    private let request: Request
    private let resolver: HostResolver
    private let timer: Timer
    /// Runs the next step from the loop (a zero timeout), so no step calls back inside `start`.
    private let soon: Timer
    private var stream: (any ConnectingStream)?
    private var addresses: [SocketAddress] = []
    /// How long each address may take to connect (and finish the handshake).
    private var attemptMs = 0
    /// Bytes before the end of the response head (kept only until it has been parsed).
    private var received: [UInt8] = []
    private var head: ResponseHead?
    private var body: [UInt8] = []
    private var decoder = ChunkedDecoder()
    /// Interim (1xx) heads skipped so far; a server that sends more than `maxInterim` is dropped.
    private var interimHeads = 0
    static let maxInterim = 8
    private var completion: ((Result<[UInt8], AddressError>) -> Void)?
    /// Why the last address failed (reported when every one has).
    private var lastProblem = "no address"

    init(loop: EventLoop, _ request: Request) {
        self.loop = loop
        self.request = request
        resolver = HostResolver(loop: loop)
        timer = Timer(loop: loop)
        soon = Timer(loop: loop)
    }

    private func later(_ step: @escaping (DocumentFetch) -> Void) {
        soon.onFire = { [weak self] in if let self { step(self) } }
        soon.start(timeoutMs: 0)
    }

    func start(_ completion: @escaping (Result<[UInt8], AddressError>) -> Void) {
        self.completion = completion
        timer.onFire = { [unowned self] in fail("no complete answer within \(request.timeoutMs) ms (\(lastProblem))") }
        timer.start(timeoutMs: UInt64(request.timeoutMs))
        lastProblem = "looking up \(request.host)"
        resolver.resolveAll([(host: request.host, port: request.port, servers: request.servers)]) { [weak self] results in
            guard let self, self.completion != nil else { return }
            switch results[0] {
            case .success(let found):
                self.addresses = found.addresses
                self.attemptMs = max(250, self.request.timeoutMs / max(1, found.addresses.count))
                // An IP literal answers synchronously, inside `start`: go on from the loop.
                self.later { $0.connectNext() }
            case .failure(let problem):
                self.later { $0.fail("\($0.request.host): \(problem.message)") }
            }
        }
    }

    func cancel() {
        completion = nil
        resolver.cancelAll()
        timer.close()
        soon.close()
        stream?.close()
        stream = nil
    }

    private func connectNext() {
        guard completion != nil else { return }
        stream?.close()
        stream = nil
        guard !addresses.isEmpty else { return fail(lastProblem) }
        let address = addresses.removeFirst()
        received.removeAll()
        let tcp = TCPStream(loop: loop)
        let connecting: any ConnectingStream
        if let context = request.tls {
            do {
                connecting = try TLSStream(connecting: tcp, context: context, serverName: request.host, handshakeTimeoutMs: 0)
            } catch {
                tcp.close()
                return fail("TLS: \(error)")
            }
        } else {
            connecting = tcp
        }
        stream = connecting
        connecting.onRead = { [unowned self] bytes in take(bytes) }
        connecting.onReadEnd = { [unowned self] code in
            if code == UVError.eof { return ended() }
            if code == UVError.protocolError, let reason = (stream as? TLSStream)?.failureReason { return fail("TLS: \(reason)") }
            fail("reading from \(address): \(UVError(code))")
        }
        connecting.onWriteError = { [unowned self] code in fail("writing to \(address): \(UVError(code))") }
        let head = "GET \(request.target) HTTP/1.1\r\nHost: \(hostField)\r\nAccept: \(request.accept)\r\n"
            + "User-Agent: swift-proxy\r\nConnection: close\r\n\r\n"
        // This address's share of the deadline to connect; then the next address.
        soon.onFire = { [unowned self] in
            lastProblem = "connecting to \(address): no answer within \(attemptMs) ms"
            connectNext()
        }
        soon.start(timeoutMs: UInt64(attemptMs))
        do {
            try connecting.connect(to: address) { [weak self] status in
                guard let self, self.completion != nil, self.stream === connecting else { return }
                self.soon.stop()
                if status == UVError.protocolError, let reason = (connecting as? TLSStream)?.failureReason {
                    // A certificate that does not verify is the same on every address.
                    return self.fail("TLS: \(reason)")
                }
                guard status == 0 else {
                    self.lastProblem = "connecting to \(address): \(UVError(status))"
                    return self.connectNext()
                }
                self.lastProblem = "waiting for the answer from \(address)"
                connecting.startReading()
                connecting.write(self.request.raw ?? Array(head.utf8))
            }
        } catch {
            lastProblem = "connecting to \(address): \(error)"
            later { $0.connectNext() }
        }
    }

    /// `Host`: the name, bracketed when an IPv6 literal, with the port when not the scheme's.
    private var hostField: String {
        let name = request.host.contains(":") ? "[\(request.host)]" : request.host
        return request.port == (request.tls != nil ? 443 : 80) ? name : "\(name):\(request.port)"
    }

    private var tooLarge: String { "the answer is larger than \(request.maxBytes) bytes" }

    /// Bytes from the server: the head until it is complete (interim 1xx heads skipped), then
    /// the body by its framing; finishes as soon as the body is complete.
    private func take(_ bytes: UnsafeRawBufferPointer) {
        guard completion != nil else { return }
        guard let head else {
            let scanFrom = max(0, received.count - 3)
            received.append(raw: bytes)
            guard let end = HeadParser.endOfHead(in: received, from: scanFrom) else {
                if received.count > 65536 { fail("the response head is larger than 64 KiB") }
                return
            }
            let parsed: ResponseHead
            do { parsed = try HeadParser.parseResponse(Array(received[..<end]), requestWasHEAD: request.rawIsHEAD) } catch {
                return fail("the response is not valid HTTP/1.1: \(error.reason)")
            }
            let rest = Array(received[end...])
            received.removeAll()
            if parsed.isInterim {
                interimHeads += 1
                guard interimHeads <= Self.maxInterim else { return fail("more than \(Self.maxInterim) interim (1xx) responses") }
                return rest.withUnsafeBytes { take($0) }
            }
            lastProblem = "reading the body from the server"
            guard parsed.status == 200 || request.raw != nil else { return fail("status \(parsed.status)") }
            self.head = parsed
            if case .contentLength(let length) = parsed.framing, length > UInt64(request.maxBytes) { return fail(tooLarge) }
            if parsed.framing == .none { return succeed() }
            return rest.withUnsafeBytes { takeBody($0, parsed.framing) }
        }
        takeBody(bytes, head.framing)
    }

    private func takeBody(_ bytes: UnsafeRawBufferPointer, _ framing: BodyFraming) {
        if request.raw != nil { return discardBody(bytes, framing) }
        switch framing {
        case .none:
            succeed()
        case .contentLength(let length):
            body.append(raw: UnsafeRawBufferPointer(rebasing: bytes.prefix(Int(length) - body.count)))
            if body.count == Int(length) { succeed() }
        case .chunked:
            do {
                _ = try decoder.decode(bytes) { [self] (data) throws(HTTPParseError) in
                    guard body.count + data.count <= request.maxBytes else { throw HTTPParseError(status: 502, reason: tooLarge) }
                    body.append(raw: data)
                }
            } catch {
                return fail(error.reason)
            }
            if decoder.isComplete { succeed() }
        case .untilClose:
            guard body.count + bytes.count <= request.maxBytes else { return fail(tooLarge) }
            body.append(raw: bytes)
        }
    }

    /// A replay's answer: only where it ends matters.
    private var discarded: UInt64 = 0
    private func discardBody(_ bytes: UnsafeRawBufferPointer, _ framing: BodyFraming) {
        switch framing {
        case .none: succeed()
        case .contentLength(let length):
            discarded += UInt64(bytes.count)
            if discarded >= length { succeed() }
        case .chunked:
            do {
                _ = try decoder.decode(bytes) { (_: UnsafeRawBufferPointer) throws(HTTPParseError) in }
            } catch {
                return fail(error.reason)
            }
            if decoder.isComplete { succeed() }
        case .untilClose: break
        }
    }

    /// The server closed the connection: what arrived decides.
    private func ended() {
        guard let head else { return fail("the server closed the connection before a complete response head") }
        switch head.framing {
        case .contentLength(let length): fail("the server closed the connection after \(body.count) of \(length) body bytes")
        case .chunked: fail("the server closed the connection in the middle of a chunked body")
        case .none, .untilClose: succeed()
        }
    }


    private func succeed() { finish(.success(body)) }

    private func fail(_ problem: String) { finish(.failure(AddressError(message: problem))) }

    private func finish(_ result: Result<[UInt8], AddressError>) {
        guard let completion else { return }
        self.completion = nil
        resolver.cancelAll()
        timer.close()
        soon.close()
        stream?.close()
        stream = nil
        completion(result)
    }
}
