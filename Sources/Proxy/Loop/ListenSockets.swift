import CUV
import Glibc

/// The listening sockets for one address: one per worker loop, all bound to the same port with
/// `SO_REUSEPORT`, so the kernel spreads new connections across the workers and no lock or
/// hand-off is needed between them (libuv 1.44 has no `UV_TCP_REUSEPORT`, hence the C helper).
///
/// Opened on the supervisor's thread, before the workers get them: a bind error is reported once
/// and at start-up, and `:0` becomes one real port for every worker (each binding `:0` itself
/// would get a different port). Each descriptor is then adopted by exactly one worker's
/// `TCPListener`, which closes it. Descriptors are plain integers, so the value is `Sendable`.
public struct ListenSockets: Sendable {
    /// The bound address, with the real port.
    public let address: SocketAddress
    public let descriptors: [Int32]

    /// Opens `count` sockets on `listen`.
    ///
    /// `exclusive` first checks that no other process is listening there: `SO_REUSEPORT` would
    /// otherwise let a second proxy started by mistake on the same port silently share its
    /// traffic, where users expect "address already in use". (A reload skips the check: the
    /// proxy's own old sockets may overlap the new address.)
    ///
    /// `resolved` is `listen`'s address when the caller has looked the host name up already (a
    /// reload does, off the loop, with `HostResolver`); without it a host name is resolved here,
    /// blocking — fine at start-up, before any loop runs.
    public static func open(_ listen: ListenAddress, resolved: SocketAddress? = nil, count: Int, exclusive: Bool,
                            backlog: Int32 = 1024) throws(ProxyStartError) -> ListenSockets {
        guard var address = resolved ?? SocketAddress(ip: listen.host, port: listen.port)
                ?? (try? SocketAddress.resolve(host: listen.host, port: listen.port)) else {
            throw ProxyStartError(message: "listen: cannot use address \"\(listen)\"")
        }
        if exclusive && listen.port != 0 {
            let probe = address.withSockAddr { cuv_listen_socket($0, 0, 0) }
            guard probe >= 0 else { throw ProxyStartError(message: "cannot listen on \(address): \(UVError(probe))") }
            Glibc.close(probe)
        }
        var descriptors: [Int32] = []
        for _ in 0..<max(count, 1) {
            let fd = address.withSockAddr { cuv_listen_socket($0, 1, backlog) }
            guard fd >= 0 else {
                for d in descriptors { Glibc.close(d) }
                throw ProxyStartError(message: "cannot listen on \(address): \(UVError(fd))")
            }
            if address.port == 0 {
                // The first socket picked the port; the others join it.
                address = address.withPort(UInt16(truncatingIfNeeded: cuv_socket_port(fd)))
            }
            descriptors.append(fd)
        }
        return ListenSockets(address: address, descriptors: descriptors)
    }

    /// For `--check`: resolves `listen` and binds a socket there (not listening, closed at once)
    /// with `SO_REUSEPORT` — so an address a running proxy holds (its sockets share the port) is
    /// bindable, and one another program holds fails with "address already in use". Returns the
    /// address, or why it cannot be used.
    public static func probeBind(_ listen: ListenAddress) -> Result<SocketAddress, ProxyStartError> {
        let address: SocketAddress
        if let literal = SocketAddress(ip: listen.host, port: listen.port) {
            address = literal
        } else {
            do { address = try SocketAddress.resolve(host: listen.host, port: listen.port) } catch {
                return .failure(ProxyStartError(message: "\(listen.host) does not resolve: \(error.message)"))
            }
        }
        let fd = socket(address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(ProxyStartError(message: "cannot make a socket: \(String(cString: strerror(errno)))")) }
        defer { Glibc.close(fd) }
        var on: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { bind(fd, $0, socklen_t(address.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)) }
        guard bound == 0 else {
            let why = switch errno {
            case EADDRINUSE: "already in use (by another program, or by a proxy running as another user)"
            case EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            case EADDRNOTAVAIL: "no such address on this machine"
            default: String(cString: strerror(errno))
            }
            return .failure(ProxyStartError(message: "cannot listen on \(address): \(why)"))
        }
        return .success(address)
    }

    /// Closes descriptors that no worker adopted (start-up failed half-way).
    public func closeAll() {
        for d in descriptors { Glibc.close(d) }
    }
}
