import Synchronization

/// The request inspector's recordings: one ring per worker, each behind its own lock, so a
/// worker only ever contends with an admin request reading its ring (never with another
/// worker). A worker adds an entry when a request starts (in flight) and replaces it when the
/// exchange ends; admin requests, on any worker, read every ring.
///
/// Bounded per worker: at most `max_requests` entries and `max_memory_bytes` of recorded bytes,
/// the oldest dropped first.
/// Ownership: `ProxyMetrics` (one per process, kept across reloads). Threading: any; every
/// access takes the ring's lock (taken only while the inspector is on: twice per request).
final class InspectorStore: Sendable {
    enum Entry: Sendable {
        case inFlight(InFlightExchange)
        case done(InspectedExchange)

        var seq: UInt64 {
            switch self {
            case .inFlight(let e): e.seq
            case .done(let e): e.seq
            }
        }
    }

    struct Ring: Sendable {
        /// Ascending by `seq`.
        var entries: [Entry] = []
        var bytes = 0
    }

    private let rings: [Locked<Ring>]
    private let nextSeq = Atomic<UInt64>(0)
    /// A random word of this process: a replay's `X-Inspect-Replay: SEQ;t=TOKEN` carries it, so
    /// only the proxy's own replays are listed as such (whatever address they come from).
    let replayToken: String

    init(workers: Int) {
        rings = (0..<max(1, workers)).map { _ in Locked(Ring()) }
        var generator = SystemRandomNumberGenerator()
        replayToken = String(generator.next() as UInt64, radix: 16)
    }

    /// The `X-Inspect-Replay` value for a replay of `seq`.
    func replayField(_ seq: UInt64) -> String { "\(seq);t=\(replayToken)" }

    /// The sequence number a request's `X-Inspect-Replay` names, if the proxy itself sent it.
    func replayOf(_ value: String) -> UInt64? {
        let parts = value.split(separator: ";", maxSplits: 1)
        guard parts.count == 2, parts[1] == "t=" + replayToken else { return nil }
        return UInt64(parts[0])
    }

    /// A new sequence number (unique across workers, increasing).
    func takeSeq() -> UInt64 {
        nextSeq.wrappingAdd(1, ordering: .relaxed).newValue
    }

    func begin(_ exchange: InFlightExchange, worker: Int, limits: InspectConfig) {
        rings[worker % rings.count].withLock { ring in
            ring.entries.append(.inFlight(exchange))
            Self.trim(&ring, limits)
        }
    }

    /// Replaces the in-flight entry of the same `seq` (or adds it by age, if it was dropped
    /// meanwhile).
    func finish(_ exchange: InspectedExchange, worker: Int, limits: InspectConfig) {
        rings[worker % rings.count].withLock { ring in
            ring.bytes += exchange.footprint
            if let i = ring.entries.lastIndex(where: { $0.seq == exchange.seq }) {
                ring.entries[i] = .done(exchange)
            } else {
                // In its place by age; `trim` drops it again if it is the oldest of too many.
                let at = ring.entries.firstIndex { $0.seq > exchange.seq } ?? ring.entries.count
                ring.entries.insert(.done(exchange), at: at)
            }
            Self.trim(&ring, limits)
        }
    }

    /// Drops the oldest entries beyond `max_requests`, then while the ring holds more than
    /// `max_memory_bytes`. Usually one entry or none: the scan stops at the first it keeps.
    private static func trim(_ ring: inout Ring, _ limits: InspectConfig) {
        var drop = 0
        while drop < ring.entries.count && (ring.entries.count - drop > limits.maxRequests || ring.bytes > limits.maxMemoryBytes) {
            if case .done(let x) = ring.entries[drop] { ring.bytes -= x.footprint }
            drop += 1
        }
        if drop > 0 { ring.entries.removeFirst(drop) }
    }

    /// The newest `limit` entries of all workers, newest first; with `after`, only newer ones
    /// plus the older ones still in flight (one that ended since is found with `find`).
    func list(limit: Int, after: UInt64? = nil) -> [Entry] {
        var all: [Entry] = []
        for ring in rings {
            ring.withLock { r in
                for e in r.entries where after.map({ e.seq > $0 }) ?? true { all.append(e) }
                if let after {
                    for e in r.entries where e.seq <= after { if case .inFlight = e { all.append(e) } }
                }
            }
        }
        all.sort { $0.seq > $1.seq }
        return Array(all.prefix(limit))
    }

    func find(_ seq: UInt64) -> Entry? {
        for ring in rings {
            if let e = ring.withLock({ r in r.entries.last { $0.seq == seq } }) { return e }
        }
        return nil
    }

    /// The highest sequence number given out so far.
    var latest: UInt64 { nextSeq.load(ordering: .relaxed) }

    /// Forgets everything (`DELETE`-like "clear" from the page).
    func clear() {
        for ring in rings { ring.withLock { $0 = Ring() } }
    }
}
