/// Active health checks: every `interval_ms`, one `GET <path>` per backend on a fresh
/// connection; a 2xx answer within `timeout_ms` is a success.
///
/// A backend goes down after `unhealthy_threshold` consecutive failures and comes back after
/// `healthy_threshold` consecutive successes. The very first probe after start decides the
/// state at once, so a backend that is dead at start-up is routed around within one probe rather
/// than after a whole threshold of intervals.
///
/// One checker serves every worker: it runs on the supervisor's loop and publishes each verdict
/// in `SharedBackend`, which every worker reads on its request path — so a backend is probed
/// once per interval (not once per worker) and all workers stop using it at the same moment.
///
/// A probe that fails for a reason on the proxy's own side — out of descriptors, socket buffers,
/// memory or local ports (`UVError.isLocalResourceError`) — says nothing about the backend: it
/// gives no verdict (the streaks are left as they are) and the round is skipped for that backend,
/// logged once per episode. Otherwise a proxy under descriptor pressure would mark every healthy
/// backend down and answer 503 to everyone after the pressure ended.
/// Threading: the supervisor's loop thread only.
public final class HealthChecker {
    private let loop: EventLoop
    private let backends: [SharedBackend]
    private let config: HealthCheckConfig
    private let timer: Timer
    private var inFlight: [ProbeRound?]
    /// Probes are being skipped for a local resource error (logged when this turns true).
    private(set) var isSkippingForLocalError = false

    /// `proxyProtocol`: the upstream's `send_proxy_protocol` (0: none).
    private let proxyProtocol: Int

    public init(loop: EventLoop, backends: [SharedBackend], config: HealthCheckConfig, proxyProtocol: Int = 0) {
        self.proxyProtocol = proxyProtocol
        self.loop = loop
        self.backends = backends
        self.config = config
        timer = Timer(loop: loop)
        inFlight = Array(repeating: nil, count: backends.count)
    }

    public func start() {
        timer.onFire = { [unowned self] in self.probeAll() }
        timer.start(timeoutMs: 0, repeatMs: UInt64(config.intervalMs))
    }

    public func stop() {
        timer.close()
        for p in inFlight { p?.cancel() }
    }

    private func probeAll() {
        for i in backends.indices where inFlight[i] == nil {
            let b = backends[i]
            let round = ProbeRound(loop: loop, backend: b) { [config, proxyProtocol, loop] address in
                HealthProbe(loop: loop, backend: b, address: address, path: config.path, timeoutMs: config.timeoutMs,
                            proxyProtocol: proxyProtocol)
            }
            inFlight[i] = round
            round.run { [unowned self] outcome in
                self.inFlight[i] = nil
                self.record(b, outcome)
            }
        }
    }

    func record(_ b: SharedBackend, _ outcome: ProbeOutcome) {
        switch outcome {
        case .success:
            record(b, ok: true, problem: nil)
        case .failure(let problem):
            record(b, ok: false, problem: problem)
        case .noVerdict(let problem):
            if !isSkippingForLocalError {
                isSkippingForLocalError = true
                Log.warning("health check of \(b.id) (\(b.url)) skipped: \(problem); not counted against the backend, "
                    + "health checks give no verdict until the proxy has the resources to probe again")
            }
        }
    }

    func record(_ b: SharedBackend, ok: Bool, problem: String?) {
        if isSkippingForLocalError {
            isSkippingForLocalError = false
            Log.info("health checks can probe again (\(b.id) probed)")
        }
        switch b.recordProbe(ok: ok, problem: problem, healthyThreshold: config.healthyThreshold,
                             unhealthyThreshold: config.unhealthyThreshold) {
        case .up?: Log.info("backend \(b.id) (\(b.url)) is up")
        case .down?: Log.warning("backend \(b.id) (\(b.url)) is down: \(problem ?? "probe failed")")
        case nil: break
        }
    }
}

/// What one probe found.
enum ProbeOutcome: Equatable {
    case success
    /// The backend failed the probe (refused, reset, timed out, answered non-2xx).
    case failure(String)
    /// The probe could not be made for a reason on the proxy's side (`UVError.isLocalResourceError`).
    case noVerdict(String)

    /// A failure with libuv error `code` during `step` ("connect", "read", "write").
    static func error(_ code: Int32, during step: String) -> ProbeOutcome {
        let error = UVError(code)
        if let local = error.localResourceProblem { return .noVerdict("\(step): \(local)") }
        return .failure(step == "connect" ? "connect: \(error.name)" : error.name)
    }
}

/// One probe: connect, send the request, read the status line, close.
final class HealthProbe {
    /// TCP, or TLS over it for an `https://` backend (the handshake is part of connecting).
    private let stream: any ConnectingStream
    private let timer: Timer
    private let backend: SharedBackend
    /// `nil`: connect-only probe.
    private let request: [UInt8]?
    private let timeoutMs: Int
    private let proxyProtocol: Int
    private var received: [UInt8] = []
    private var completion: ((ProbeOutcome) -> Void)?
    /// The TCP connection is made (a TLS handshake may still be under way).
    var hasConnected: Bool { stream.isTransportConnected }

    /// Where this probe connects (one of the backend's addresses; its current one by default).
    private let address: SocketAddress

    /// `proxyProtocol`: the upstream's `send_proxy_protocol` (0: none): the probe's connection
    /// starts with a header saying it speaks for itself.
    init(loop: EventLoop, backend: SharedBackend, address: SocketAddress? = nil, path: String?, timeoutMs: Int, proxyProtocol: Int = 0) {
        self.address = address ?? backend.currentAddress
        self.proxyProtocol = proxyProtocol
        self.backend = backend
        self.timeoutMs = timeoutMs
        let tcp = TCPStream(loop: loop)
        if let context = backend.tls,
           let tls = try? TLSStream(connecting: tcp, context: context, serverName: backend.tlsServerName, handshakeTimeoutMs: 0) {
            stream = tls
        } else {
            stream = tcp
        }
        timer = Timer(loop: loop)
        request = path.map { path in Array("GET \(path) HTTP/1.1\r\nHost: \(backend.authority)\r\nUser-Agent: swift-proxy-health-check\r\nConnection: close\r\n\r\n".utf8) }
    }

    func run(_ completion: @escaping (ProbeOutcome) -> Void) {
        self.completion = completion
        // Not connected yet: the address did not answer (`ProbeRound` may try the next one).
        timer.onFire = { [self] in finish(false, "\(hasConnected ? "" : "connect: ")no answer within \(timeoutMs) ms") }
        timer.start(timeoutMs: UInt64(timeoutMs))
        stream.onRead = { [self] bytes in
            received.append(raw: bytes)
            evaluate(final: false)
        }
        stream.onReadEnd = { [self] code in
            if code == UVError.eof { return evaluate(final: true) }
            // TLS 1.3 servers refuse a client certificate after the client's handshake is done.
            if code == UVError.protocolError, let reason = (stream as? TLSStream)?.failureReason { return finish(false, "TLS: \(reason)") }
            finish(.error(code, during: "read"))
        }
        stream.onWriteError = { [self] code in finish(.error(code, during: "write")) }
        do {
            // Out of descriptors, `uv_tcp_connect` fails here, creating the socket (EMFILE).
            try stream.connect(to: address) { [self] status in
                if status == UVError.protocolError, let reason = (stream as? TLSStream)?.failureReason {
                    return finish(false, "TLS: \(reason)")
                }
                guard status == 0 else { return finish(.error(status, during: "connect")) }
                guard let request else { return finish(true, nil) }  // connect-only
                stream.startReading()
                stream.write(request)
            }
            if proxyProtocol != 0 { stream.sendFirst(ProxyProtocol.localHeader(version: proxyProtocol)) }
        } catch {
            finish(.error(error.code, during: "connect"))
        }
    }

    /// Decides as soon as the status line is in.
    private func evaluate(final: Bool) {
        guard let lf = received.firstIndex(of: UInt8(ascii: "\n")) else {
            if final || received.count > 1024 { finish(false, "no valid status line") }
            return
        }
        let line = received[..<lf]
        // "HTTP/1.x NNN"
        guard line.count >= 12, line.starts(with: Array("HTTP/1.".utf8)) else {
            return finish(false, "no valid status line")
        }
        let d = Array(line[(line.startIndex + 9)..<(line.startIndex + 12)])
        guard d.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return finish(false, "no valid status line") }
        let status = Int(d[0] - 48) * 100 + Int(d[1] - 48) * 10 + Int(d[2] - 48)
        if (200..<300).contains(status) { finish(true, nil) } else { finish(false, "status \(status)") }
    }

    private func finish(_ ok: Bool, _ problem: String?) {
        finish(ok ? .success : .failure(problem ?? "probe failed"))
    }

    private func finish(_ outcome: ProbeOutcome) {
        guard let completion else { return }
        self.completion = nil
        timer.close()
        stream.close()
        completion(outcome)
    }

    func cancel() {
        completion = nil
        timer.close()
        stream.close()
    }
}
