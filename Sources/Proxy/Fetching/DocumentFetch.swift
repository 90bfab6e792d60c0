/// One `GET` of a small document over HTTP/1.1, with TLS for `https://`: what the supervisor
/// uses to fetch a JWKS. It looks the host up off the loop (`HostResolver`), tries its
/// addresses in order until one connects, sends `Connection: close`, reads at most `maxBytes`
/// of body, and parses the answer with the proxy's own response parser (`HeadParser`,
/// `ChunkedDecoder`). Only a 200 with a complete body counts; redirects are not followed.
///
/// Bounded: one deadline (`timeoutMs`) covers the lookup, connecting, the handshake and reading;
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
        /// The media type asked for (`Accept`).
        var accept = "application/json"
    }

    private let loop: EventLoop
    private let request: Request
    private let resolver: HostResolver
    private let timer: Timer
    /// Runs the next step from the loop (a zero timeout), so no step calls back inside `start`.
    private let soon: Timer
    private var stream: (any ConnectingStream)?
    private var addresses: [SocketAddress] = []
    private var received: [UInt8] = []
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
        resolver.resolveAll([(host: request.host, port: request.port, servers: nil)]) { [weak self] results in
            guard let self, self.completion != nil else { return }
            switch results[0] {
            case .success(let found):
                self.addresses = found.addresses
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
        connecting.onRead = { [unowned self] bytes in
            received.append(raw: bytes)
            if received.count > request.maxBytes + 65536 { return fail("the answer is larger than \(request.maxBytes) bytes") }
            evaluate(final: false)
        }
        connecting.onReadEnd = { [unowned self] code in
            if code == UVError.eof { return evaluate(final: true) }
            if code == UVError.protocolError, let reason = (stream as? TLSStream)?.failureReason { return fail("TLS: \(reason)") }
            fail("reading from \(address): \(UVError(code))")
        }
        connecting.onWriteError = { [unowned self] code in fail("writing to \(address): \(UVError(code))") }
        let head = "GET \(request.target) HTTP/1.1\r\nHost: \(hostField)\r\nAccept: \(request.accept)\r\n"
            + "User-Agent: swift-proxy\r\nConnection: close\r\n\r\n"
        do {
            try connecting.connect(to: address) { [weak self] status in
                guard let self, self.completion != nil, self.stream === connecting else { return }
                if status == UVError.protocolError, let reason = (connecting as? TLSStream)?.failureReason {
                    // A certificate that does not verify is the same on every address.
                    return self.fail("TLS: \(reason)")
                }
                guard status == 0 else {
                    self.lastProblem = "connecting to \(address): \(UVError(status))"
                    return self.connectNext()
                }
                connecting.startReading()
                connecting.write(Array(head.utf8))
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

    /// Finishes as soon as the body is complete; at the end of input, whatever is there decides.
    private func evaluate(final: Bool) {
        guard let end = headEnd() else {
            if final { fail("the server closed the connection before a complete response head") }
            else if received.count > 65536 { fail("the response head is larger than 64 KiB") }
            return
        }
        let head: ResponseHead
        do { head = try HeadParser.parseResponse(Array(received[..<end]), requestWasHEAD: false) } catch {
            return fail("the response is not valid HTTP/1.1: \(error.reason)")
        }
        if head.isInterim {
            received.removeSubrange(..<end)
            return evaluate(final: final)
        }
        guard head.status == 200 else { return fail("status \(head.status)") }
        let rest = received[end...]
        switch head.framing {
        case .none:
            succeed([])
        case .contentLength(let length):
            guard length <= UInt64(request.maxBytes) else { return fail("the answer is larger than \(request.maxBytes) bytes") }
            if rest.count >= Int(length) { return succeed(Array(rest.prefix(Int(length)))) }
            if final { fail("the server closed the connection after \(rest.count) of \(length) body bytes") }
        case .chunked:
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            do {
                _ = try rest.withUnsafeBytes { (input) throws(HTTPParseError) -> Int in
                    try decoder.decode(input) { (data) throws(HTTPParseError) in
                        body.append(raw: data)
                        if body.count > request.maxBytes { throw HTTPParseError(status: 502, reason: "the answer is larger than \(request.maxBytes) bytes") }
                    }
                }
            } catch let error as HTTPParseError {
                return fail(error.reason)
            } catch {
                return fail("\(error)")
            }
            if decoder.isComplete { return succeed(body) }
            if final { fail("the server closed the connection in the middle of a chunked body") }
        case .untilClose:
            if rest.count > request.maxBytes { return fail("the answer is larger than \(request.maxBytes) bytes") }
            if final { succeed(Array(rest)) }
        }
    }

    /// The index just past the head's blank line, if it has arrived.
    private func headEnd() -> Int? {
        guard received.count >= 4 else { return nil }
        for i in 3..<received.count where received[i] == 0x0A && received[i - 1] == 0x0D && received[i - 2] == 0x0A && received[i - 3] == 0x0D {
            return i + 1
        }
        return nil
    }

    private func succeed(_ body: [UInt8]) { finish(.success(body)) }

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
