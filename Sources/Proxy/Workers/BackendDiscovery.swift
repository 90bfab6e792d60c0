/// Looks backend host names up again while the proxy runs — every `resolve_interval_ms` of the
/// backend's upstream, or at the records' TTL when that is shorter and known (answers from the
/// `"resolver"` servers carry one; the system resolver's do not) — off the loop, through
/// `HostResolver`. Every answer, good or failed, goes to `onAnswers`; the supervisor decides what
/// changed.
///
/// A failed lookup is tried again after at most 5 s (sooner when the interval is shorter); the
/// addresses in use stay meanwhile. IP literals are never looked up.
///
/// Threading: the supervisor's loop only.
final class BackendDiscovery {
    private let loop: EventLoop
    private let resolver: HostResolver
    private var timer: Timer?
    private var backends: [(config: BackendConfig, intervalMs: Int)] = []
    private var servers: DNSServers?
    /// When each backend's name is due again (by backend id; monotonic ns).
    private var due: [String: UInt64] = [:]

    /// The answers of one round of lookups, one per backend looked up.
    var onAnswers: (([(backend: BackendConfig, result: Result<ResolvedAddresses, AddressError>)]) -> Void)?

    init(loop: EventLoop) {
        self.loop = loop
        resolver = HostResolver(loop: loop)
    }

    /// The backends (with host names) of `config` and their intervals; called at start and after
    /// each reload. A backend seen before keeps its due time; a new one is due one interval (or
    /// `ttls`'s TTL) from now, its first lookup having just been done by the caller.
    func configure(_ config: ProxyConfig, ttls: [String: Int] = [:]) {
        let servers = Self.servers(config)
        if servers != self.servers {
            // Lookups still asking the old servers are abandoned (a silent one would hold the
            // next round back for its whole timeout); their backends are due at once.
            resolver.cancelAll()
        }
        self.servers = servers
        backends = config.allUpstreams.flatMap { u in
            u.backends.filter { !$0.hasIPLiteralHost && u.balance.resolveIntervalMs > 0 }
                .map { (config: $0, intervalMs: u.balance.resolveIntervalMs) }
        }
        let now = Platform.monotonicNanos()
        var next: [String: UInt64] = [:]
        for b in backends {
            let fresh = now + Self.delayNs(intervalMs: b.intervalMs, ttlS: ttls[b.config.id], failed: false)
            // Seen before: its due time stays, unless a shorter interval brings it forward.
            next[b.config.id] = due[b.config.id].map { min($0, fresh) } ?? fresh
        }
        due = next
        timer?.close()
        timer = nil
        guard let shortest = backends.map(\.intervalMs).min() else { return }
        // Checked often enough for the shortest interval (and TTLs down to a second).
        let tick = UInt64(min(max(shortest / 4, 50), 250))
        let t = Timer(loop: loop)
        t.onFire = { [unowned self] in self.tick() }
        t.start(timeoutMs: tick, repeatMs: tick)
        timer = t
    }

    /// The config's `"resolver"` as c-ares takes it (nil: the system resolver).
    static func servers(_ config: ProxyConfig) -> DNSServers? {
        config.resolver.map { DNSServers(list: $0.serverList, timeoutMs: $0.timeoutMs, attempts: $0.attempts) }
    }

    func stop() {
        timer?.close()
        timer = nil
        resolver.cancelAll()
    }

    private func tick() {
        guard !resolver.isBusy else { return }
        let now = Platform.monotonicNanos()
        let dueNow = backends.filter { (due[$0.config.id] ?? 0) <= now }
        guard !dueNow.isEmpty else { return }
        // One lookup per distinct name and port, however many backends share it.
        var names: [(host: String, port: UInt16, servers: DNSServers?)] = []
        let slots: [Int] = dueNow.map { b in
            if let i = names.firstIndex(where: { $0.host == b.config.host && $0.port == b.config.port }) { return i }
            names.append((host: b.config.host, port: b.config.port, servers: servers))
            return names.count - 1
        }
        resolver.resolveAll(names) { [unowned self] results in
            let answered = Platform.monotonicNanos()
            let perBackend = slots.map { results[$0] }
            for (b, result) in zip(dueNow, perBackend) where self.due[b.config.id] != nil {
                let ttl = (try? result.get())?.ttlS
                self.due[b.config.id] = answered + Self.delayNs(intervalMs: b.intervalMs, ttlS: ttl, failed: (try? result.get()) == nil)
            }
            self.onAnswers?(zip(dueNow, perBackend).map { (backend: $0.config, result: $1) })
        }
    }

    /// The wait before the next lookup: the interval, or the TTL when shorter (but at least a
    /// second, or the interval when that is shorter: a TTL of 0 cannot make a busy loop, nor wait
    /// longer than the interval); after a failure at most 5 s.
    static func delayNs(intervalMs: Int, ttlS: Int?, failed: Bool) -> UInt64 {
        var ms = intervalMs
        if let ttlS, ttlS >= 0, ttlS < Int(Int32.max), ttlS * 1000 < ms { ms = max(ttlS * 1000, min(1000, intervalMs)) }
        if failed { ms = min(ms, 5000) }
        return UInt64(ms) * 1_000_000
    }
}
