import Synchronization

/// The process-wide half of the metrics: every worker's proxy-wide counters, the supervisor's
/// reload counts, the access log's drop count and when the process started. Per-backend and
/// per-upstream counters live with `SharedBackend` and `SharedUpstream`, which a reload keeps
/// or replaces along with the backend.
///
/// Threading: `Sendable`. Each worker writes only its own slab; the supervisor writes the reload
/// counts; any worker reads everything when it answers a scrape.
public final class ProxyMetrics: Sendable {
    /// One `WorkerStats` slab per worker, indexed by worker number.
    let workers: [CounterSlab]
    let accessLog: AccessLogWriter
    /// Wall clock (ms since the epoch) and `Platform.monotonicNanos()` at start.
    let startedWallMs: Int64
    let startedNs: UInt64
    private let reloads = Atomic<UInt64>(0)
    /// The request inspector's recordings (used while `inspect.enabled`; kept across reloads).
    let inspector: InspectorStore
    private let failedReloads = Atomic<UInt64>(0)

    public init(workers: Int, accessLog: AccessLogWriter) {
        self.workers = (0..<max(workers, 1)).map { _ in CounterSlab(count: WorkerStats.size) }
        self.accessLog = accessLog
        inspector = InspectorStore(workers: max(workers, 1))
        startedWallMs = Platform.wallClockMs()
        startedNs = Platform.monotonicNanos()
    }

    func reloaded(ok: Bool) {
        if ok { reloads.wrappingAdd(1, ordering: .relaxed) } else { failedReloads.wrappingAdd(1, ordering: .relaxed) }
    }
    var reloadCount: (succeeded: UInt64, failed: UInt64) {
        (reloads.load(ordering: .relaxed), failedReloads.load(ordering: .relaxed))
    }

    var uptimeSeconds: Double { Double(Platform.monotonicNanos() &- startedNs) / 1e9 }
}
