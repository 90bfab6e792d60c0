import CUV
import Glibc

/// A listening TCP socket. Each accepted connection arrives as a new `TCPStream` on the same loop.
public final class TCPListener: Handle {
    private let tcp: UnsafeMutablePointer<uv_tcp_t>
    /// Called with each accepted stream; the receiver owns it (and must close it).
    public var onAccept: ((TCPStream) -> Void)?
    /// Called when accepting fails (e.g. `EMFILE`); libuv keeps a reserve descriptor to shed
    /// such connections, so the loop does not spin.
    public var onAcceptError: ((Int32) -> Void)?
    /// Asked as each connection arrives, before it is handed over; `false` leaves it pending:
    /// libuv holds it and stops watching the socket, so the next ones wait in the kernel's listen
    /// queue (nothing is refused) until `acceptPending()`.
    public var shouldAccept: (() -> Bool)?
    /// A connection is waiting for `acceptPending()`.
    public private(set) var hasPending = false
    private var backlog: Int32 = 1024

    public init(loop: EventLoop) {
        tcp = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_tcp_as_handle(tcp))
        uv_tcp_init(loop.uvLoop, tcp)
        attach()
    }

    deinit { tcp.deallocate() }

    override func didClose() {
        onAccept = nil
        onAcceptError = nil
        shouldAccept = nil
    }

    /// Binds and listens. `EADDRINUSE` surfaces here (libuv reports it at `uv_listen`).
    public func listen(on address: SocketAddress, backlog: Int32 = 1024) throws(UVError) {
        try check(address.withSockAddr { uv_tcp_bind(tcp, $0, 0) })
        try startAccepting(backlog: backlog)
    }

    /// Takes over a socket that is already bound and listening (see `ListenSockets`). The
    /// descriptor is the listener's in every case, failure included: it is closed here when libuv
    /// could not take it, otherwise with the listener — callers only `close()` the listener.
    public func adopt(descriptor: Int32, backlog: Int32 = 1024) throws(UVError) {
        let rc = uv_tcp_open(tcp, descriptor)
        guard rc == 0 else {
            _ = Glibc.close(descriptor)
            throw UVError(rc)
        }
        try startAccepting(backlog: backlog)
    }

    private func startAccepting(backlog: Int32) throws(UVError) {
        self.backlog = backlog
        try check(uv_listen(cuv_tcp_as_stream(tcp), backlog) { server, status in
            guard let server, let data = uv_handle_get_data(UnsafeMutableRawPointer(server).assumingMemoryBound(to: uv_handle_t.self)) else { return }
            Unmanaged<TCPListener>.fromOpaque(data).takeUnretainedValue().connectionArrived(status: status)
        })
    }

    private func connectionArrived(status: Int32) {
        guard status == 0 else { onAcceptError?(status); return }
        if let shouldAccept, !shouldAccept() {
            hasPending = true  // libuv keeps it in `accepted_fd` and stops polling the socket
            return
        }
        acceptOne()
    }

    /// Hands over the connection that `shouldAccept` left pending; `uv_accept` then resumes
    /// watching the socket.
    public func acceptPending() {
        guard hasPending, !isClosing else { return }
        hasPending = false
        acceptOne(resumingAfterFailure: true)
    }

    private func acceptOne(resumingAfterFailure: Bool = false) {
        let client = TCPStream(loop: loop)
        let rc = uv_accept(cuv_tcp_as_stream(tcp), client.stream)
        guard rc == 0 else {
            client.close()
            // A failed `uv_accept` does not restart the watcher that a pending connection
            // stopped; listening again does.
            if resumingAfterFailure { try? startAccepting(backlog: backlog) }
            onAcceptError?(rc)
            return
        }
        if let onAccept { onAccept(client) } else { client.close() }
    }

    /// The bound address (the real port when listening on port 0).
    public var localAddress: SocketAddress? { SocketAddress.of(tcp, uv_tcp_getsockname) }
}
