/// How an attempt on a backend ended, as the balancing policies learn it.
enum AttemptOutcome: Equatable {
    /// A complete response came back (any status: a 5xx is the backend's answer, not a failure
    /// of the connection; passive health may still count it).
    case response(status: UInt16)
    /// The connection could not be opened (refused, timed out, unreachable).
    case connectFailure
    /// The backend broke the exchange: reset or closed early, or sent what cannot be read.
    case upstreamFailure
    /// No response head within `upstream_ms`.
    case timeout
    /// Not the backend's doing: the client went away or broke its request, the proxy ran out of
    /// a local resource, or a pooled connection lost the keep-alive race.
    case notTheBackend
}

/// The balancer of one upstream on one worker: it picks a backend for each attempt and hears what
/// became of it — `started` when a request goes to a backend, `finished` with the outcome and the
/// time to the response head, `healthChanged` when the active checks change a verdict.
///
/// The policy (`BalancePolicy`) is chosen by a `switch`, and the state of the stateful ones is
/// kept in optionals of this struct, mutated in place — no existential and no enum payload copied
/// out and back (which would copy its arrays) on the request path. Round-robin is always there:
/// it is a policy, and what the hashing policies fall back to for a request without its key.
///
/// In-flight counts are this worker's view (`Backend.activeRequests`, published for `/_health`):
/// reading the other workers' counters would put a cross-core cache miss per backend on every
/// pick, and with connections spread over workers by the kernel each worker's share of a
/// backend's load tracks the whole. The summed counters are for reporting.
/// Threading: one worker's loop.
struct LoadBalancer {
    let policy: BalancePolicy
    /// Passive health: when failures in a row eject a backend.
    let outlier: OutlierDetectionConfig
    /// Which failed tries go to another backend, and the budget that bounds them.
    let retries: RetriesConfig
    /// `retries.per_try_timeout_ms` when a timeout may be retried (`on` has `timeout` and
    /// `attempts` > 0), else 0; and `retries.attempts`: what every request's deadline needs,
    /// read without copying `retries` (its `Set`) on the request path.
    let perTryTimeoutMs: Int
    let retryAttempts: Int
    var retryBudget: RetryBudget
    /// The upstream's name, for log lines.
    let upstreamName: String
    /// Serialises ejection decisions across workers (`SharedUpstream.ejectionDecision`).
    private let ejectionDecision: Locked<Int>
    /// What the hashing policies hash (nil for the others), and the header, cookie or query
    /// parameter name in it as bytes.
    let hashKey: HashKey?
    let keyName: [UInt8]
    /// `hashKey`'s case, what the request path switches on.
    private let keyKind: RequestHashKey.Kind
    /// Each backend's weight, by index.
    let weights: [Int]
    /// Sticky sessions: the cookie's name and each backend's value for it (the hex of a hash of
    /// its URL: opaque, and the same in every worker and process).
    let sticky: StickyConfig?
    private let stickyName: [UInt8]
    private let stickyValues: [[UInt8]]
    private var roundRobin: RoundRobinBalancer
    // Not optionals: a policy's state is read in place on every pick (an optional's payload
    // would be copied out, retaining its arrays, measured at about 30 instructions a request);
    // the policies not in use keep empty ones.
    private var p2c = P2CEWMABalancer(count: 0, now: 0)
    private var ring = RingHashBalancer(names: [], weights: [])
    private var maglev = MaglevBalancer.empty
    private var random = BalancerRandom()

    /// Plain round-robin (tests, and pools built without a config).
    init() {
        policy = .roundRobin
        weights = []
        sticky = nil
        stickyName = []
        stickyValues = []
        outlier = OutlierDetectionConfig()
        retries = RetriesConfig()
        perTryTimeoutMs = 0
        retryAttempts = 0
        retryBudget = RetryBudget(retries, now: Platform.monotonicNanos())
        ejectionDecision = Locked(0)
        upstreamName = UpstreamConfig.defaultName
        hashKey = nil
        keyName = []
        keyKind = .path
        roundRobin = RoundRobinBalancer()
    }

    /// `weights`: each backend's weight (by default its `effectiveWeight`: the file's, or one set
    /// through the runtime API).
    init(_ config: BalanceConfig, backends: [Backend], weights: [Int]? = nil, upstreamName: String = UpstreamConfig.defaultName,
         ejectionDecision: Locked<Int> = Locked(0)) {
        self.ejectionDecision = ejectionDecision
        policy = config.policy
        outlier = config.outlierDetection
        retries = config.retries
        perTryTimeoutMs = config.retries.on.contains(.timeout) && config.retries.attempts > 0 ? config.retries.perTryTimeoutMs : 0
        retryAttempts = config.retries.attempts
        retryBudget = RetryBudget(config.retries, now: Platform.monotonicNanos())
        self.upstreamName = upstreamName
        hashKey = config.policy.hashes ? config.hashKey : nil
        switch hashKey {
        case .header(let name), .cookie(let name), .query(let name): keyName = Array(name.utf8)
        case .clientIP, .path, nil: keyName = []
        }
        keyKind = hashKey.map(RequestHashKey.Kind.init) ?? .path
        let weights = weights ?? backends.map(\.shared.effectiveWeight)
        self.weights = weights
        sticky = config.sticky
        stickyName = Array((config.sticky?.cookie ?? "").utf8)
        stickyValues = backends.map { Array(String(StableHash.hash($0.shared.balancingName, seed: 0x7374_6963_6b79), radix: 16).utf8) }
        roundRobin = RoundRobinBalancer(weights: weights)
        switch config.policy {
        case .p2cEWMA: p2c = P2CEWMABalancer(count: backends.count, now: Platform.monotonicNanos(), weights: weights)
        case .ringHash: ring = RingHashBalancer(names: backends.map(\.shared.balancingName), weights: weights)
        case .maglev: maglev = MaglevBalancer(names: backends.map(\.shared.balancingName), weights: weights, healthy: backends.map(\.isAvailable))
        case .roundRobin, .leastRequest, .random: break
        }
    }

    /// A healthy backend not yet tried for this request, or nil when there is none. `key`: the
    /// hash of the request's `hash_key` (`RequestHashKey`), for the hashing policies; without
    /// it they go round-robin.
    /// `now`: the loop's time in ns (p2c's clock; read when not given).
    mutating func pick(from backends: [Backend], excluding tried: AttemptSet, key: UInt64? = nil, now: UInt64? = nil) -> Int? {
        switch policy {
        case .roundRobin:
            return roundRobin.pick(from: backends, excluding: tried)
        case .leastRequest:
            return LeastRequestBalancer().pick(from: backends, weights: weights, excluding: tried, random: &random)
        case .random:
            return RandomBalancer().pick(from: backends, weights: weights, excluding: tried, random: &random)
        case .p2cEWMA:
            return p2c.pick(from: backends, weights: weights, excluding: tried, random: &random, now: now ?? Platform.monotonicNanos())
        case .ringHash:
            if let key, let picked = ring.pick(key: key, from: backends, excluding: tried) { return picked }
            return roundRobin.pick(from: backends, excluding: tried)
        case .maglev:
            // A table that gives nothing (stale until the next sweep, or every member tried):
            // round-robin over what is available.
            if let key, let picked = maglev.pick(key: key, from: backends, excluding: tried) { return picked }
            return roundRobin.pick(from: backends, excluding: tried)
        }
    }

    /// The hash of `head`'s key, when this policy hashes one and the request carries it.
    func key(of head: RequestHead, target: Range<Int>? = nil, clientIP: [UInt8]) -> UInt64? {
        guard let hashKey else { return nil }
        return RequestHashKey.hash(keyKind, name: keyName, head: head, target: target ?? head.target, clientIP: clientIP)
    }

    /// The backend the request's sticky cookie names, if any (whether or not it is available).
    func stickyChoice(_ head: RequestHead) -> Int? {
        guard sticky != nil else { return nil }
        let b = head.bytes
        for field in head.fields where field.name.count == 6 && b.equalsIgnoringCase(field.name, "cookie") {
            guard let value = RequestHashKey.pairValue(b, field.value, separator: UInt8(ascii: ";"), name: stickyName) else { continue }
            for (i, v) in stickyValues.enumerated() where v.count == value.count && b[value].elementsEqual(v) { return i }
            return nil
        }
        return nil
    }

    /// The `Set-Cookie` value that keeps a client on `backends[index]`.
    func stickyCookie(for index: Int) -> [UInt8] {
        guard let sticky else { return [] }
        var text = "\(sticky.cookie)=\(String(decoding: stickyValues[index], as: UTF8.self)); Path=/"
        if sticky.maxAgeS > 0 { text += "; Max-Age=\(sticky.maxAgeS)" }
        text += "; HttpOnly; SameSite=Lax"
        return Array(text.utf8)
    }

    /// Whether any backend is available at all — healthy, not ejected, not drained or disabled
    /// (else a 503 "no healthy backend" rather than a 502).
    func anyHealthy(_ backends: [Backend]) -> Bool {
        backends.contains { $0.isAvailable }
    }

    /// A request went to `backends[index]`.
    func started(_ index: Int, of backends: [Backend]) {
        backends[index].activeRequests += 1
    }

    /// The request that `started` on `backends[index]` is done with it. `headMicros`: the time from
    /// the pick to the response head, when one came.
    mutating func finished(_ index: Int, of backends: [Backend], outcome: AttemptOutcome, headMicros: UInt64?, now: UInt64? = nil) {
        backends[index].activeRequests -= 1
        if outlier.isEnabled { notePassiveHealth(index, backends, outcome) }
        guard policy == .p2cEWMA else { return }  // the others learn nothing from outcomes
        switch outcome {
        case .response(let status) where status < 500:
            if let headMicros { p2c.observe(index, micros: headMicros, failed: false, now: now ?? Platform.monotonicNanos()) }
        case .response, .connectFailure, .upstreamFailure, .timeout:
            // A 5xx counts as a failure: a broken backend answering fast must not look fast.
            p2c.observe(index, micros: nil, failed: true, now: now ?? Platform.monotonicNanos())
        case .notTheBackend:
            break
        }
    }

    /// Whether some backends may take requests changed: the active checks' verdict, or an
    /// ejection by passive health that began or ended (told once per worker sweep). Picks skip
    /// unavailable backends whatever the policy; Maglev rebuilds its table over the available ones.
    mutating func availabilityChanged(backends: [Backend]) {
        if policy == .maglev { maglev.rebuild(healthy: backends.map(\.isAvailable)) }
    }

    /// Passive health: a gateway failure (refused or failed connection, reset, timeout, or a 502,
    /// 503 or 504 answer — Envoy's "consecutive gateway failure"; a 500 is the application's
    /// answer, as nginx sees it) lengthens the backend's streak of failures, kept across workers
    /// in `SharedBackend`, and at `consecutive_failures` ejects it — unless the unavailable
    /// backends (ejected, down, drained) would then pass `max_ejection_percent` of the upstream,
    /// or none would be left. Any other answer ends the streak.
    private func notePassiveHealth(_ index: Int, _ backends: [Backend], _ outcome: AttemptOutcome) {
        let shared = backends[index].shared
        switch outcome {
        case .response(let status) where status < 502 || status > 504:
            shared.noteSuccess()
        case .response, .connectFailure, .upstreamFailure, .timeout:
            guard shared.noteFailure() >= outlier.consecutiveFailures else { return }
            let ejected: Int? = ejectionDecision.withLock { _ in
                guard !shared.isEjected else { return nil }
                let unavailable = backends.reduce(0) { $0 + ($1.isAvailable ? 0 : 1) }
                guard unavailable + 1 < backends.count,
                      (backends.reduce(0) { $0 + ($1.shared.isEjected ? 1 : 0) } + 1) * 100 <= outlier.maxEjectionPercent * backends.count
                else { return nil }
                return shared.eject(nowNs: Platform.monotonicNanos(), baseMs: outlier.baseEjectionMs)
            }
            if let ms = ejected {
                Log.warning("backend \(shared.id) of upstream \(upstreamName) ejected for \(ms) ms after \(outlier.consecutiveFailures) failed attempts in a row (outlier_detection)")
            }
        case .notTheBackend:
            break
        }
    }
}
