/// One connection to a backend, either serving an exchange (`owner` set) or idle in its
/// backend's pool. Its stream is a `TCPStream` in the proxy and a `MemoryStream` in the tests
/// (`ProxyServer.makeUpstreamStream`): an existential, since one backend's connections are of one
/// kind but the exchange and the pools hold connections of any backend.
///
/// The stream's callbacks are installed once, when the connection is created, and route to the
/// current owner — so handing a pooled connection to a new request allocates nothing.
/// Threading: loop thread only.
/// What an upstream connection reports to the exchange using it (the connection knows nothing
/// of who that is: an HTTP/1 client connection today, an HTTP/2 stream later).
protocol UpstreamConnectionDelegate: AnyObject {
    /// Response bytes arrived; valid only during the call.
    func upstreamRead(_ bytes: UnsafeRawBufferPointer)
    /// The backend closed (`UVError.eof`) or reset the connection.
    func upstreamEnded(_ code: Int32)
    /// A write to the backend failed (it stopped reading).
    func upstreamWriteFailed(_ code: Int32)
    /// The write queue to the backend fell back under its low-water mark.
    func upstreamDrained()
}

public final class UpstreamConnection {
    public let stream: any ConnectingStream
    /// `stream` when it is a `TCPStream` (always, in the proxy): the calls made for every request
    /// (`write`, `isCongested`, `startReading`, the pool's checks) go to it directly, where they
    /// are inlined, instead of through the existential's witness table — that cost ~270
    /// instructions per proxied request in callgrind.
    private let tcp: TCPStream?
    public let backend: Backend
    /// The exchange using this connection; `nil` while idle in the pool or connecting for nobody.
    /// Strong, and cleared by the owner when it lets go (`releaseUpstream`) and by `close()`:
    /// a weak reference here (or in the callbacks below) gives the object a side table, and
    /// then every retain and release of it takes ARC's slow path — about 10 per request.
    var owner: (any UpstreamConnectionDelegate)?
    /// Completed exchanges on this connection (0 = fresh).
    public internal(set) var exchangesCompleted = 0
    /// Loop time when the connection went idle (for the pool's idle timeout).
    var idleSince: UInt64 = 0
    /// How long this connection may stay idle in the pool (the pool's limit, or less when the
    /// backend announced a shorter `Keep-Alive: timeout`).
    var idleLimitMs: UInt64 = 0
    var isInPool = false
    /// It began with a PROXY protocol header naming one client (`send_proxy_protocol`): never
    /// pooled for another.
    var namesOneClient = false

    init(backend: Backend, stream: any ConnectingStream) {
        self.backend = backend
        self.stream = stream
        tcp = stream as? TCPStream
        // Set once, before connecting (libuv applies it when the socket is created), not per request.
        stream.setNoDelay()
        // These capture `self` strongly: the cycle with the stream ends when the stream closes
        // (its close callback drops them), and after `close()` the stream calls none of them.
        stream.onRead = { [self] bytes in
            if let owner { owner.upstreamRead(bytes) } else { backend.pool.idleConnectionSpoke(self) }
        }
        stream.onReadEnd = { [self] code in
            if let owner { owner.upstreamEnded(code) } else { backend.pool.idleConnectionSpoke(self) }
        }
        stream.onWriteError = { [self] code in
            if let owner { owner.upstreamWriteFailed(code) } else { backend.pool.idleConnectionSpoke(self) }
        }
        stream.onDrain = { [self] in owner?.upstreamDrained() }
    }

    public var isClosed: Bool {
        if let tcp { return tcp.isClosing }
        return stream.isClosing
    }

    // The stream's per-request calls, with the TCP fast path (see `tcp`).

    @inline(__always)
    func write(_ b0: UnsafeRawBufferPointer, _ b1: UnsafeRawBufferPointer) {
        if let tcp { tcp.write(b0, b1) } else { stream.write(b0, b1) }
    }

    var isCongested: Bool {
        if let tcp { return tcp.isCongested }
        return stream.isCongested
    }

    func startReading() {
        if let tcp { tcp.startReading() } else { stream.startReading() }
    }

    /// See `UpstreamPool.take`.
    func hasPendingInput(checkSocket: Bool) -> Bool {
        if let tcp { return checkSocket ? tcp.hasPendingInputOrEOF : tcp.hasPendingInputInCurrentPoll }
        return checkSocket ? stream.hasPendingInputOrEOF : stream.hasPendingInputInCurrentPoll
    }

    public func close() {
        owner = nil
        stream.close()
    }
}
