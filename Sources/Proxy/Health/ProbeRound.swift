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
    /// Probes running.
    private var running: [HealthProbe] = []
    /// How the probe at the current address (position 0) failed to connect.
    private var currentAddressFailure: ProbeOutcome?
    private var staggerTimer: Timer?
    private var completion: ((ProbeOutcome) -> Void)?

    init(loop: EventLoop, backend: SharedBackend, makeProbe: @escaping (SocketAddress) -> HealthProbe) {
        self.loop = loop
        self.backend = backend
        self.makeProbe = makeProbe
        let count = backend.addressCount
        let first = count == 1 ? 0 : backend.answeringIndex
        order = (0..<count).map { (first + $0) % count }
    }

    func run(_ completion: @escaping (ProbeOutcome) -> Void) {
        self.completion = completion
        startNext()
    }

    func cancel() {
        completion = nil
        staggerTimer?.close()
        staggerTimer = nil
        for probe in running { probe.cancel() }
        running = []
    }

    private func startNext() {
        guard nextPosition < order.count else { return }
        let position = nextPosition
        nextPosition += 1
        let probe = makeProbe(backend.address(at: order[position]))
        running.append(probe)
        if nextPosition < order.count {
            // The next address joins in if this one has not connected by then.
            if staggerTimer == nil {
                let timer = Timer(loop: loop)
                timer.onFire = { [unowned self] in
                    guard completion != nil, !running.contains(where: \.hasConnected) else { return }
                    startNext()
                }
                staggerTimer = timer
            }
            staggerTimer?.start(timeoutMs: SharedBackend.connectionAttemptDelayMs)
        }
        probe.run { [unowned self] outcome in ended(position, probe, outcome) }
    }

    private func ended(_ position: Int, _ probe: HealthProbe, _ outcome: ProbeOutcome) {
        guard completion != nil else { return }
        running.removeAll { $0 === probe }
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
        if position == 0 { currentAddressFailure = outcome }
        if nextPosition < order.count && !running.contains(where: \.hasConnected) {
            staggerTimer?.stop()
            return startNext()  // refused here: the next address at once
        }
        // Every address failed to connect (the current one first of all): what it said.
        if running.isEmpty { finish(currentAddressFailure ?? outcome) }
    }

    private func finish(_ outcome: ProbeOutcome) {
        guard let completion else { return }
        cancel()
        completion(outcome)
    }
}
