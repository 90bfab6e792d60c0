/// One health check of one backend: a `HealthProbe` at its current address and, for a backend
/// whose name has further addresses (`SharedBackend.fallbacks`: `localhost` is 127.0.0.1 and
/// ::1), at those too, happy-eyeballs style (RFC 8305): the next address is probed when the
/// previous one failed to connect, or alongside it when that one has not connected within
/// `SharedBackend.connectionAttemptDelayMs` (an address that drops packets instead of refusing
/// would otherwise use up the whole probe timeout). The race is on the TCP connect: a TLS
/// handshake under way is not raced.
///
/// The first probe that succeeds decides, and its address becomes the backend's current one. A
/// probe that connected and then failed (non-2xx, timed out, TLS) is the backend's verdict. When
/// every address fails to connect, the current address's outcome is reported.
/// Ownership: the `HealthChecker`, until `completion` runs or `cancel`. Threading: its loop only.
final class ProbeRound {
    private let loop: EventLoop
    private let backend: SharedBackend
    private let makeProbe: (SocketAddress) -> HealthProbe
    /// Address indices in the order they are tried: the current one first.
    private let order: [Int]
    private var nextPosition = 0
    /// Probes running, with the position in `order` of their address.
    private var running: [(position: Int, probe: HealthProbe)] = []
    /// The outcome at each position, once it failed.
    private var failures: [ProbeOutcome?]
    private var staggerTimer: Timer?
    private var completion: ((ProbeOutcome) -> Void)?

    init(loop: EventLoop, backend: SharedBackend, makeProbe: @escaping (SocketAddress) -> HealthProbe) {
        self.loop = loop
        self.backend = backend
        self.makeProbe = makeProbe
        let count = backend.addressCount
        let first = count == 1 ? 0 : backend.answeringIndex
        order = (0..<count).map { (first + $0) % count }
        failures = Array(repeating: nil, count: count)
    }

    func run(_ completion: @escaping (ProbeOutcome) -> Void) {
        self.completion = completion
        startNext()
    }

    func cancel() {
        completion = nil
        staggerTimer?.close()
        staggerTimer = nil
        for r in running { r.probe.cancel() }
        running = []
    }

    private func startNext() {
        guard nextPosition < order.count else { return }
        let position = nextPosition
        nextPosition += 1
        let probe = makeProbe(backend.address(at: order[position]))
        running.append((position, probe))
        if nextPosition < order.count {
            // The next address joins in if this one has not connected by then.
            let timer = staggerTimer ?? Timer(loop: loop)
            staggerTimer = timer
            timer.onFire = { [unowned self] in
                guard completion != nil, !running.contains(where: { $0.probe.hasConnected }) else { return }
                startNext()
            }
            timer.start(timeoutMs: SharedBackend.connectionAttemptDelayMs)
        }
        probe.run { [unowned self] outcome in ended(position, probe, outcome) }
    }

    private func ended(_ position: Int, _ probe: HealthProbe, _ outcome: ProbeOutcome) {
        guard completion != nil else { return }
        running.removeAll { $0.probe === probe }
        let couldNotConnect: Bool = switch outcome {
        case .failure(let problem): problem.hasPrefix("connect: ")
        case .noVerdict: true
        case .success: false
        }
        if outcome == .success {
            backend.addressAnswered(order[position])
            return finish(outcome)
        }
        // Connected and failed, or only one address: that is the backend's answer.
        if !couldNotConnect || order.count == 1 { return finish(outcome) }
        failures[position] = outcome
        if nextPosition < order.count && !running.contains(where: { $0.probe.hasConnected }) {
            staggerTimer?.stop()
            return startNext()  // refused here: the next address at once
        }
        if running.isEmpty { finish(failures.compactMap { $0 }.first ?? outcome) }
    }

    private func finish(_ outcome: ProbeOutcome) {
        guard let completion else { return }
        cancel()
        completion(outcome)
    }
}
