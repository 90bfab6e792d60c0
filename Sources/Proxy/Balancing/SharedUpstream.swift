/// The half of an upstream (a named pool) that every worker sees: its name and one slab per
/// worker counting the requests routed to it that got no backend (none healthy: 503).
///
/// Created by the supervisor; a reload keeps the instance of an upstream whose name stays, so
/// its counters carry over. Threading: `Sendable`; worker `i` writes `stats[i]` only.
public final class SharedUpstream: Sendable {
    public let name: String
    /// One `RequestStats` block per worker.
    let stats: [CounterSlab]
    /// Per worker: retries sent, by `RetryCondition` (its index in `allCases`), then retries the
    /// budget refused (`retriesOverBudget`).
    let retryStats: [CounterSlab]
    static let retriesOverBudget = RetryCondition.allCases.count
    /// Held while a worker decides an ejection (counting the unavailable backends, then
    /// ejecting), so two workers cannot each take out "the last half". Rare: only when a streak
    /// reaches the limit.
    let ejectionDecision = Locked(0)

    public init(name: String, workers: Int) {
        self.name = name
        stats = (0..<max(workers, 1)).map { _ in CounterSlab(count: RequestStats.size) }
        retryStats = (0..<max(workers, 1)).map { _ in CounterSlab(count: RetryCondition.allCases.count + 1) }
    }

    /// The upstreams of `config`, reusing those of `previous` by name.
    static func list(for config: ProxyConfig, workers: Int, previous: [SharedUpstream] = []) -> [SharedUpstream] {
        config.allUpstreams.map { u in previous.first { $0.name == u.name } ?? SharedUpstream(name: u.name, workers: workers) }
    }
}
