import Glibc

/// A blocking TCP connection to 127.0.0.1:`port`, for tests of both test targets. `configure` runs
/// on the socket before the connect (options such as `SO_RCVBUF` only shape the window when set
/// before the handshake). Returns the descriptor, or `nil` with `errno` left as the connect set it
/// (the socket is closed then).
public func connectToLoopback(_ port: UInt16, configure: (Int32) -> Void = { _ in }) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    configure(fd)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else {
        let saved = errno
        close(fd)
        errno = saved
        return nil
    }
    return fd
}
