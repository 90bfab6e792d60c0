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
    var isInPool = false

    init(backend: Backend, loop: EventLoop) {
        self.backend = backend
        stream = TCPStream(loop: loop)
        stream.onRead = { [unowned self] bytes in
            if let owner { owner.upstreamRead(bytes) } else { self.backend.pool.idleConnectionSpoke(self) }
        }
        stream.onReadEnd = { [unowned self] code in
            if let owner { owner.upstreamEnded(code) } else { self.backend.pool.idleConnectionSpoke(self) }
        }
        stream.onWriteError = { [unowned self] code in
            if let owner { owner.upstreamEnded(code) } else { self.backend.pool.idleConnectionSpoke(self) }
        }
        stream.onDrain = { [unowned self] in owner?.upstreamDrained() }
    }

    public var isClosed: Bool { stream.isClosing }

    public func close() {
        owner = nil
        stream.close()
    }
}
