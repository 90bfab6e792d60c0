/// Idle keep-alive connections to one backend, most recently used first.
///
/// The idle timeout sits below common upstream keep-alive timeouts (Node's 5 s): the proxy
/// should be the side that closes an idle connection, which avoids the race where a backend
/// closes it just as the proxy reuses it. A pooled connection keeps reading, so a backend's
/// close is seen (and the connection dropped) as soon as it happens.
/// Threading: loop thread only.
public final class UpstreamPool {
    private var idle: [UpstreamConnection] = []
    public let maxIdle: Int
    public let idleTimeoutMs: UInt64

    public init(maxIdle: Int, idleTimeoutMs: UInt64) {
        self.maxIdle = maxIdle
        self.idleTimeoutMs = idleTimeoutMs
    }

    public var idleCount: Int { idle.count }

    /// The most recently pooled connection still open, or `nil`.
    func take() -> UpstreamConnection? {
        while let c = idle.popLast() {
            c.isInPool = false
            if !c.isClosed { return c }
        }
        return nil
    }

    /// Returns a connection after a complete exchange. Closes it when the pool is full.
    func put(_ c: UpstreamConnection, now: UInt64) {
        c.owner = nil
        guard idle.count < maxIdle, !c.isClosed else { c.close(); return }
        c.idleSince = now
        c.isInPool = true
        idle.append(c)
    }

    /// An idle connection received bytes or EOF: a backend must not speak between responses, so
    /// the connection is dropped either way.
    func idleConnectionSpoke(_ c: UpstreamConnection) {
        remove(c)
        c.close()
    }

    /// Closes connections idle for longer than the timeout (the oldest sit at the front).
    func sweep(now: UInt64) {
        var expired = 0
        while expired < idle.count && now &- idle[expired].idleSince >= idleTimeoutMs { expired += 1 }
        guard expired > 0 else { return }
        for c in idle[0..<expired] {
            c.isInPool = false
            c.close()
        }
        idle.removeFirst(expired)
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
