/// One TCP connection to a backend, either serving an exchange (`owner` set) or idle in its
/// backend's pool.
///
/// The stream's callbacks are installed once, when the connection is created, and route to the
/// current owner — so handing a pooled connection to a new request allocates nothing.
/// Threading: loop thread only.
public final class UpstreamConnection {
    public let stream: TCPStream
    public let backend: Backend
    /// The exchange using this connection; `nil` while idle in the pool or connecting for nobody.
    weak var owner: ClientConnection?
    /// Completed exchanges on this connection (0 = fresh).
    public internal(set) var exchangesCompleted = 0
    /// Loop time when the connection went idle (for the pool's idle timeout).
    var idleSince: UInt64 = 0
    /// How long this connection may stay idle in the pool (the pool's limit, or less when the
    /// backend announced a shorter `Keep-Alive: timeout`).
    var idleLimitMs: UInt64 = 0
    var isInPool = false

    init(backend: Backend, loop: EventLoop) {
        self.backend = backend
        stream = TCPStream(loop: loop)
        // Set once, before connecting (libuv applies it when the socket is created), not per request.
        stream.setNoDelay()
        // Weak: the stream outlives this object between `close()` and libuv's close callback,
        // and libuv still completes writes in that window.
        stream.onRead = { [weak self] bytes in
            guard let self else { return }
            if let owner { owner.upstreamRead(bytes) } else { backend.pool.idleConnectionSpoke(self) }
        }
        stream.onReadEnd = { [weak self] code in
            guard let self else { return }
            if let owner { owner.upstreamEnded(code) } else { backend.pool.idleConnectionSpoke(self) }
        }
        stream.onWriteError = { [weak self] code in
            guard let self else { return }
            if let owner { owner.upstreamEnded(code) } else { backend.pool.idleConnectionSpoke(self) }
        }
        stream.onDrain = { [weak self] in self?.owner?.upstreamDrained() }
    }

    public var isClosed: Bool { stream.isClosing }

    public func close() {
        owner = nil
        stream.close()
    }
}
