/// Idle keep-alive connections to one backend, most recently used first.
///
/// The idle timeout sits below common upstream keep-alive timeouts (Node's 5 s), and a backend's
/// own `Keep-Alive: timeout=N` shortens it further: the proxy should be the side that closes an
/// idle connection, which avoids the race where a backend closes it just as the proxy reuses it.
/// A pooled connection keeps reading, so a backend's close is usually seen at once; `take()`
/// also checks the socket itself, since that close may still sit unread in the current batch.
/// Threading: loop thread only.
public final class UpstreamPool {
    private var idle: [UpstreamConnection] = [] {
        didSet {
            let n = idle.count
            counter?.idlePooled.store(n, ordering: .relaxed)
            if n != reportedToTally {
                tally?.adjust(by: n - reportedToTally)
                reportedToTally = n
            }
        }
    }
    /// The part of `tally` that is this pool's.
    private var reportedToTally = 0
    /// Changed by a reload; applies to connections pooled from then on.
    public internal(set) var maxIdle: Int
    public internal(set) var idleTimeoutMs: UInt64
    /// Where the idle count is published for `/_health` (summed over workers).
    var counter: WorkerCounters?
    /// The worker's idle connections over all its pools, counted against `limits.max_connections`
    /// (`ConnectionCount`). Set by `ProxyServer` when it adopts the pool.
    var tally: IdleUpstreamTally? {
        didSet {
            oldValue?.adjust(by: -reportedToTally)
            tally?.adjust(by: reportedToTally)
        }
    }

    public init(maxIdle: Int, idleTimeoutMs: UInt64) {
        self.maxIdle = maxIdle
        self.idleTimeoutMs = idleTimeoutMs
    }

    public var idleCount: Int { idle.count }

    /// The most recently pooled connection that is still open, not past its idle limit and with
    /// nothing unread waiting (a late byte or FIN from the backend), or `nil`.
    ///
    /// With `checkSocket` the socket is asked (`recv(MSG_PEEK)`), for requests that must not go
    /// out twice. Without it only input already polled but not yet dispatched is looked for
    /// (`hasPendingInputInCurrentPoll`: a scan of the batch, a system call only when the socket
    /// is in it); a request that may be retried then relies on the keep-alive-race retry for
    /// what arrives after the poll.
    func take(now: UInt64, checkSocket: Bool = true) -> UpstreamConnection? {
        while let c = idle.popLast() {
            c.isInPool = false
            if c.isClosed { continue }
            if now &- c.idleSince >= c.idleLimitMs
                || c.hasPendingInput(checkSocket: checkSocket) {
                c.close()
                continue
            }
            return c
        }
        return nil
    }

    /// Returns a connection after a complete exchange. Closes it when the pool is full.
    /// `backendKeepAliveMs` is the backend's announced `Keep-Alive: timeout`, if any.
    func put(_ c: UpstreamConnection, now: UInt64, backendKeepAliveMs: UInt64? = nil) {
        c.owner = nil
        // While a client waits for room that idle connections hold, none is kept (`ConnectionCount`).
        guard idle.count < maxIdle, !c.isClosed, !c.backend.isRetired, tally?.isWanted != true else { c.close(); return }
        c.idleSince = now
        // Give up a connection a second before the backend would, to stay clear of its timer.
        c.idleLimitMs = min(idleTimeoutMs, backendKeepAliveMs.map { $0 > 1000 ? $0 - 1000 : 0 } ?? .max)
        guard c.idleLimitMs > 0 else { c.close(); return }
        c.isInPool = true
        idle.append(c)
    }

    /// An idle connection received bytes or EOF: a backend must not speak between responses, so
    /// the connection is dropped either way.
    func idleConnectionSpoke(_ c: UpstreamConnection) {
        remove(c)
        c.close()
    }

    /// Closes connections idle past their limit.
    func sweep(now: UInt64) {
        idle.removeAll { c in
            guard now &- c.idleSince >= c.idleLimitMs else { return false }
            c.isInPool = false
            c.close()
            return true
        }
    }

    /// When the least recently pooled connection became idle, if there is one (`closeOldest` picks
    /// among pools by it).
    var oldestIdleSince: UInt64? { idle.first?.idleSince }

    /// Closes the least recently pooled connection, to give its descriptor to a client.
    func closeOldest() {
        guard !idle.isEmpty else { return }
        let c = idle.removeFirst()
        c.isInPool = false
        c.close()
    }

    public func closeAll() {
        for c in idle { c.isInPool = false; c.close() }
        idle.removeAll()
    }

    private func remove(_ c: UpstreamConnection) {
        guard c.isInPool, let i = idle.firstIndex(where: { $0 === c }) else { return }
        c.isInPool = false
        idle.remove(at: i)
    }
}

/// One worker's idle pooled upstream connections over all its pools, published to the
/// `ConnectionCount` every worker shares (one plain store into this worker's slot per change).
/// Threading: loop thread only.
final class IdleUpstreamTally {
    private(set) var count = 0
    private let worker: Int
    private let shared: ConnectionCount

    init(worker: Int, shared: ConnectionCount) {
        self.worker = worker
        self.shared = shared
    }

    func adjust(by delta: Int) {
        count += delta
        shared.publishIdle(worker: worker, count: count)
    }

    /// Whether a client waits for room that idle connections hold (`ConnectionCount.idleConnectionsWanted`).
    var isWanted: Bool { shared.idleConnectionsWanted }
}
