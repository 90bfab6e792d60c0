import Synchronization

/// The half of a backend that every worker sees: where it is, the health verdict the health
/// checker publishes, and one set of counters per worker for `/_health`.
///
/// Created by the supervisor (at start and on reload; a reload keeps the instance of a backend
/// whose id and URL did not change, so its health and counters carry over). Each worker wraps it
/// in its own loop-confined `Backend` with its own pool.
///
/// Threading: `Sendable`. `isHealthy` is written by the health checker's thread and read on every
/// worker's request path as a relaxed atomic load — a plain load on x86-64 and arm64, no lock.
/// Each `WorkerCounters` slot has a single writer (its worker); readers sum them.
public final class SharedBackend: Sendable {
    public let config: BackendConfig
    /// This endpoint's address. A backend whose host name has several addresses is several
    /// endpoints (`BackendEndpoints`), one instance each, sharing `config`.
    public let address: SocketAddress
    /// Further addresses of the same name, of the other family, tried when `address` refuses
    /// (`localhost` is 127.0.0.1, then ::1); the one that last answered is used until it fails
    /// (`currentAddress`). Empty for IP literals and for names with several preferred addresses
    /// (those are several endpoints).
    public let fallbacks: [SocketAddress]
    /// Which of `address` (0) and `fallbacks` (1…) connects and probes go to now.
    private let answering = Atomic<Int>(0)
    /// The endpoint's name in logs, `/_health`, metrics and the runtime API: the backend's id, or
    /// `id@address` when its host name has several addresses.
    public let id: String
    /// What consistent hashing and sticky cookies name this endpoint by: the URL, plus the
    /// address when the host name has several (so the endpoints of one name differ).
    public let balancingName: String
    /// What the last lookups of the host name found (nil for an IP literal).
    public let nameRecord: BackendNameRecord?
    /// `host:port` as written in the URL: the Host header of health probes and of HTTP/1.0
    /// requests that came without one.
    public let authority: String
    /// The TLS client context of an `https://` backend (nil for `http://`), and the name its
    /// connections send as SNI and verify: `tls.server_name`, else the URL's host.
    public let tls: TLSContext?
    public let tlsServerName: String
    /// One slot per worker, indexed by worker number.
    public let counters: [WorkerCounters]
    /// Requests and latencies per worker (`RequestStats`, backend layout), indexed by worker.
    let stats: [CounterSlab]

    private let healthy: Atomic<Bool>
    private let record: Locked<ProbeRecord>

    /// `inheriting` carries the health state over from the entry a reload replaces (same URL,
    /// another id or position), so a backend known to be down does not get traffic again.
    public init(config: BackendConfig, address: SocketAddress, workers: Int, inheriting previous: SharedBackend? = nil,
                tls: TLSContext? = nil, id: String? = nil, nameRecord: BackendNameRecord? = nil, fallbacks: [SocketAddress] = []) {
        self.config = config
        self.address = address
        self.fallbacks = fallbacks
        self.id = id ?? config.id
        self.nameRecord = nameRecord
        // Named as `id` is: the URL while the name has one address (as an IP literal), so
        // cookies and hash placement do not change when a backend's URL uses a name.
        balancingName = self.id == config.id ? config.url : "\(config.url)@\(address.ipString)"
        self.tls = tls
        tlsServerName = config.tls?.serverName ?? config.host
        // The scheme's default port is left out, as a browser would.
        if config.tls != nil && config.port == 443 {
            authority = config.host.contains(":") ? "[\(config.host)]" : config.host
        } else {
            authority = AddressSyntax.join(host: config.host, port: config.port)
        }
        counters = (0..<max(workers, 1)).map { _ in WorkerCounters() }
        stats = (0..<max(workers, 1)).map { _ in CounterSlab(count: RequestStats.backendSize) }
        healthy = Atomic(previous?.isHealthy ?? true)
        configuredWeight.store(config.weight, ordering: .relaxed)
        availableSinceNs.store(previous?.availableSince ?? Platform.monotonicNanos(), ordering: .relaxed)
        record = Locked(previous?.probeRecord ?? ProbeRecord())
    }

    /// RFC 8305's recommended Connection Attempt Delay: how long a connect (or health probe) to
    /// one address may go unanswered before the next address is tried alongside it.
    static let connectionAttemptDelayMs: UInt64 = 250

    /// `address` and then `fallbacks`.
    public var addressCount: Int { 1 + fallbacks.count }
    public var answeringIndex: Int { answering.load(ordering: .relaxed) }
    public func address(at index: Int) -> SocketAddress { index == 0 ? address : fallbacks[index - 1] }
    /// Where new connections and probes go: the address that answered last.
    public var currentAddress: SocketAddress { address(at: answering.load(ordering: .relaxed)) }

    /// A connect to address `index` failed: the next one becomes current, unless another worker
    /// or the prober moved on already. Any thread (one compare-and-exchange).
    func addressFailed(_ index: Int) {
        guard addressCount > 1 else { return }
        _ = answering.compareExchange(expected: index, desired: (index + 1) % addressCount, ordering: .relaxed)
    }

    /// Address `index` answered (a probe): it is current from now on.
    func addressAnswered(_ index: Int) {
        if answering.load(ordering: .relaxed) != index { answering.store(index, ordering: .relaxed) }
    }

    /// The configured backend's id (shared by all its endpoints).
    public var backendID: String { config.id }
    public var url: String { config.url }

    /// The current verdict: every worker routes around a backend the moment this turns false.
    public var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    /// The probe streaks and last error, as one consistent snapshot.
    public var probeRecord: ProbeRecord { record.withLock { $0 } }

    /// Applies one probe result under the thresholds; returns the state change, if any.
    /// Called on the health checker's thread only.
    func recordProbe(ok: Bool, problem: String?, healthyThreshold: Int, unhealthyThreshold: Int) -> HealthChange? {
        let wasHealthy = isHealthy
        let nowHealthy: Bool = record.withLock { r in
            let first = !r.hasBeenProbed
            r.hasBeenProbed = true
            if ok {
                r.consecutiveSuccesses += 1
                r.consecutiveFailures = 0
                r.lastError = nil
                return wasHealthy || first || r.consecutiveSuccesses >= healthyThreshold
            }
            r.consecutiveFailures += 1
            r.failures += 1
            r.consecutiveSuccesses = 0
            r.lastError = problem
            return !wasHealthy ? false : !(first || r.consecutiveFailures >= unhealthyThreshold)
        }
        guard nowHealthy != wasHealthy else { return nil }
        healthy.store(nowHealthy, ordering: .relaxed)
        if nowHealthy {
            _ = endEjection(nowNs: 0, force: true)
            noteAvailable(nowNs: Platform.monotonicNanos())
        }
        return nowHealthy ? .up : .down
    }

    // MARK: Passive health (outlier detection)
    //
    // Every worker reports its attempts here; the first to see the streak reach the limit ejects
    // the backend (a compare-and-exchange, so one ejection per streak), and the workers' sweeps
    // end it when it is due. Relaxed atomics: the request path reads one flag.

    private let failureStreak = Atomic<Int>(0)
    /// When the current ejection ends (monotonic ns); 0: not ejected. One atomic, so a sweep can
    /// never see an ejection without its end (each change is one compare-and-exchange).
    private let ejectedUntilNs = Atomic<UInt64>(0)
    /// Ejections in a row (the next one lasts this many + 1 base times, up to 10); back to 0
    /// after a success outside an ejection.
    private let ejectionStreak = Atomic<Int>(0)
    private let ejectionsTotal = Atomic<Int>(0)

    // MARK: Runtime API (`/_admin/backends/{id}/…`), until the next reload

    /// `enabled`, `draining` (no new requests but those a sticky cookie sends) or `disabled`
    /// (none at all); in-flight requests finish either way.
    public enum AdminState: Int, Sendable { case enabled = 0, draining = 1, disabled = 2 }
    private let adminStateRaw = Atomic<Int>(0)
    /// A weight set at runtime (0: the configured one).
    private let weightOverride = Atomic<Int>(0)
    /// The configured weight: `config.weight`, or the file's after a reload that changed only it
    /// (which keeps this instance).
    private let configuredWeight = Atomic<Int>(1)
    func setConfiguredWeight(_ weight: Int) { configuredWeight.store(weight, ordering: .relaxed) }

    public var adminState: AdminState { AdminState(rawValue: adminStateRaw.load(ordering: .relaxed)) ?? .enabled }
    func setAdminState(_ state: AdminState) { adminStateRaw.store(state.rawValue, ordering: .relaxed) }
    /// The weight the balancers use: the runtime one, else the configured one.
    public var effectiveWeight: Int {
        let w = weightOverride.load(ordering: .relaxed)
        return w > 0 ? w : configuredWeight.load(ordering: .relaxed)
    }
    func setWeight(_ weight: Int) { weightOverride.store(weight, ordering: .relaxed) }
    /// When the backend last became available: created, back up by the active check, or back
    /// from an ejection (monotonic ns) — where `slow_start_ms` counts from.
    private let availableSinceNs = Atomic<UInt64>(0)
    public var availableSince: UInt64 { availableSinceNs.load(ordering: .relaxed) }
    func noteAvailable(nowNs: UInt64) { availableSinceNs.store(nowNs, ordering: .relaxed) }

    /// The runtime API's state and weight of `other` (the endpoint a re-resolution replaces).
    func copyRuntimeChanges(from other: SharedBackend) {
        adminStateRaw.store(other.adminStateRaw.load(ordering: .relaxed), ordering: .relaxed)
        weightOverride.store(other.weightOverride.load(ordering: .relaxed), ordering: .relaxed)
    }

    /// A reload starts from the file again.
    func resetRuntimeChanges() {
        adminStateRaw.store(0, ordering: .relaxed)
        weightOverride.store(0, ordering: .relaxed)
    }

    /// Passive health has taken this backend out for now.
    public var isEjected: Bool { ejectedUntilNs.load(ordering: .relaxed) != 0 }
    /// The active check's verdict and not ejected: what the balancer may pick.
    public var isAvailable: Bool {
        healthy.load(ordering: .relaxed) && ejectedUntilNs.load(ordering: .relaxed) == 0 && adminStateRaw.load(ordering: .relaxed) == 0
    }
    /// Whether a sticky cookie may still send requests here: healthy, not ejected, not disabled
    /// (a draining backend keeps its sessions, as HAProxy's drain).
    public var takesStickySessions: Bool {
        healthy.load(ordering: .relaxed) && ejectedUntilNs.load(ordering: .relaxed) == 0 && adminStateRaw.load(ordering: .relaxed) != 2
    }
    /// Times ejected since start (or since this backend entered the config).
    public var ejections: Int { ejectionsTotal.load(ordering: .relaxed) }
    /// Failed attempts in a row, as passive health counts them.
    public var consecutiveFailures: Int { failureStreak.load(ordering: .relaxed) }

    /// An attempt got an answer that is not a 5xx. Writes only when there is a streak to end
    /// (the common case costs one load, and the cache line stays shared between workers).
    func noteSuccess() {
        if failureStreak.load(ordering: .relaxed) != 0 { failureStreak.store(0, ordering: .relaxed) }
        if ejectionStreak.load(ordering: .relaxed) != 0 && !isEjected { ejectionStreak.store(0, ordering: .relaxed) }
    }

    /// An attempt failed; returns the streak, this one included. Failures while ejected (requests
    /// that were in flight) are not counted: the next streak starts after the ejection.
    func noteFailure() -> Int {
        if isEjected { return 0 }
        return failureStreak.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Ejects the backend until `nowNs` + `baseMs` × (ejections in a row + 1, capped at 10).
    /// Returns the ejection's length in ms, or nil when it is ejected already.
    func eject(nowNs: UInt64, baseMs: Int) -> Int? {
        let times = min(ejectionStreak.load(ordering: .relaxed) + 1, 10)
        let ms = baseMs * times
        let until = max(nowNs &+ UInt64(ms) * 1_000_000, 1)
        guard ejectedUntilNs.compareExchange(expected: 0, desired: until, ordering: .relaxed).exchanged else { return nil }
        ejectionStreak.wrappingAdd(1, ordering: .relaxed)
        ejectionsTotal.wrappingAdd(1, ordering: .relaxed)
        failureStreak.store(0, ordering: .relaxed)
        return ms
    }

    /// Ends an ejection that is due at `nowNs` (or at once with `force`: the active check turned
    /// the backend from down to up, or passive health was turned off). Returns whether this call
    /// ended it.
    func endEjection(nowNs: UInt64, force: Bool = false) -> Bool {
        let until = ejectedUntilNs.load(ordering: .relaxed)
        guard until != 0, force || nowNs >= until else { return false }
        guard ejectedUntilNs.compareExchange(expected: until, desired: 0, ordering: .relaxed).exchanged else { return false }
        failureStreak.store(0, ordering: .relaxed)
        noteAvailable(nowNs: max(nowNs, until))
        return true
    }

    /// Requests in flight to this backend, summed over all workers.
    public var activeRequests: Int { counters.reduce(0) { $0 + $1.activeRequests.load(ordering: .relaxed) } }
    /// Idle pooled connections to this backend, summed over all workers.
    public var idlePooledConnections: Int { counters.reduce(0) { $0 + $1.idlePooled.load(ordering: .relaxed) } }

    /// Same backend as far as a reload is concerned: its pool and health carry over.
    /// (The weight is not part of it: it belongs to the balancer, which every reload rebuilds.)
    func isSame(as other: BackendConfig) -> Bool {
        var mine = config
        mine.weight = other.weight
        return mine == other
    }

    /// Same server under another name or position: its health carries over.
    func hasSameAddress(as other: BackendConfig) -> Bool { config.host == other.host && config.port == other.port }
}

public enum HealthChange: Sendable { case up, down }

/// What the health checker knows about one backend beyond up/down.
public struct ProbeRecord: Sendable, Equatable {
    public var consecutiveSuccesses = 0
    public var consecutiveFailures = 0
    /// Whether any probe has completed yet: the first result decides the state at once.
    public var hasBeenProbed = false
    /// Why the last probe failed.
    public var lastError: String?
    /// Failed probes since start (or since this backend entered the config).
    public var failures: UInt64 = 0
}

/// One worker's counters for one backend. Written by that worker only (relaxed stores of values
/// it tracks itself, not read-modify-write), so they cost the request path no bus locking.
///
/// Padded to 128 bytes: the slots of different workers are allocated one after another, and
/// without padding two workers' hot counters would share a cache line that bounces between
/// their cores on every request.
public final class WorkerCounters: Sendable {
    public let activeRequests = Atomic<Int>(0)
    public let idlePooled = Atomic<Int>(0)
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    init() {}
}
