import CUV

/// An IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    private var storage = sockaddr_storage()

    /// Parses an IP literal (`127.0.0.1`, `::1`; no brackets) and a port.
    public init?(ip: String, port: UInt16) {
        var s = sockaddr_storage()
        let ok: Bool = withUnsafeMutableBytes(of: &s) { raw in
            if ip.contains(":") {
                return uv_ip6_addr(ip, Int32(port), raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)) == 0
            }
            return uv_ip4_addr(ip, Int32(port), raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)) == 0
        }
        guard ok else { return nil }
        storage = s
    }

    init(storage: sockaddr_storage) { self.storage = storage }

    /// From an address in network order (4 bytes: IPv4, 16: IPv6) and a port; nil for other
    /// lengths.
    public init?(addressBytes bytes: ArraySlice<UInt8>, port: UInt16) {
        var s = sockaddr_storage()
        let ok: Bool = withUnsafeMutableBytes(of: &s) { raw in
            switch bytes.count {
            case 4:
                var a = sockaddr_in()
                a.sin_family = sa_family_t(AF_INET)
                a.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &a.sin_addr) { $0.copyBytes(from: bytes) }
                raw.storeBytes(of: a, as: sockaddr_in.self)
                return true
            case 16:
                var a = sockaddr_in6()
                a.sin6_family = sa_family_t(AF_INET6)
                a.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &a.sin6_addr) { $0.copyBytes(from: bytes) }
                raw.storeBytes(of: a, as: sockaddr_in6.self)
                return true
            default:
                return false
            }
        }
        guard ok else { return nil }
        storage = s
    }

    /// The address a libuv getter (`uv_tcp_getsockname`, `uv_tcp_getpeername`) reports for `tcp`.
    static func of(_ tcp: UnsafeMutablePointer<uv_tcp_t>,
                   _ getter: (UnsafePointer<uv_tcp_t>?, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<Int32>?) -> Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { raw in
            getter(tcp, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
        }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }

    /// Resolves a host name with a blocking `getaddrinfo`: only before a loop runs (start-up,
    /// `--check`), never on a running loop — a reload resolves with `HostResolver`, on libuv's
    /// thread pool. The first of `resolveAll`'s addresses (IPv4 preferred).
    public static func resolve(host: String, port: UInt16) throws(AddressError) -> SocketAddress {
        try resolveAll(host: host, port: port).addresses[0]
    }

    /// Every address of a host name (`ResolvedAddresses`: the IPv4 ones, else the IPv6 ones),
    /// asking `servers` when given, else the system resolver — blocking, so only before a loop
    /// runs (start-up, `--check`); `HostResolver.resolveAll` is the same off the loop.
    public static func resolveAll(host: String, port: UInt16, servers: DNSServers? = nil) throws(AddressError) -> ResolvedAddresses {
        if let literal = SocketAddress(ip: host, port: port) { return ResolvedAddresses(addresses: [literal]) }
        if let servers { return try servers.lookup(host: host, port: port).get() }
        var hints = resolverHints
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw AddressError(message: "cannot resolve host \"\(host)\": \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        return try allChosen(from: first, host: host).get()
    }

    /// What both ways of resolving ask `getaddrinfo` for.
    static var resolverHints: addrinfo {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        return hints
    }

    /// The addresses to use from a `getaddrinfo` answer (see `ResolvedAddresses`).
    static func allChosen(from first: UnsafeMutablePointer<addrinfo>, host: String) -> Result<ResolvedAddresses, AddressError> {
        var all: [(SocketAddress, ttlS: Int?)] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            p = ai.pointee.ai_next
            guard ai.pointee.ai_family == AF_INET || ai.pointee.ai_family == AF_INET6, let addr = ai.pointee.ai_addr,
                  Int(ai.pointee.ai_addrlen) <= MemoryLayout<sockaddr_storage>.size else { continue }
            var s = sockaddr_storage()
            withUnsafeMutableBytes(of: &s) { dst in
                dst.baseAddress!.copyMemory(from: addr, byteCount: Int(ai.pointee.ai_addrlen))
            }
            all.append((SocketAddress(storage: s), ttlS: nil))
        }
        let resolved = ResolvedAddresses(choosingFrom: all)
        guard !resolved.addresses.isEmpty else {
            return .failure(AddressError(message: "host \"\(host)\" has no IPv4 or IPv6 address"))
        }
        return .success(resolved)
    }

    /// An address from raw bytes: `family` AF_INET (the first 4 of `bytes`) or AF_INET6 (16).
    init?(family: Int32, bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                                 UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8), port: UInt16) {
        var s = sockaddr_storage()
        var b = bytes
        switch family {
        case AF_INET:
            withUnsafeMutableBytes(of: &s) { raw in
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                withUnsafeBytes(of: &b) { src in
                    withUnsafeMutableBytes(of: &sin.pointee.sin_addr) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<4])) }
                }
            }
        case AF_INET6:
            withUnsafeMutableBytes(of: &s) { raw in
                let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = port.bigEndian
                withUnsafeBytes(of: &b) { src in
                    withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { $0.copyMemory(from: src) }
                }
            }
        default:
            return nil
        }
        storage = s
    }

    public var isIPv6: Bool { Int32(storage.ss_family) == AF_INET6 }

    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            if isIPv6 {
                return UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
            }
            return UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
        }
    }

    /// The same address with another port.
    public func withPort(_ port: UInt16) -> SocketAddress {
        var copy = self
        withUnsafeMutableBytes(of: &copy.storage) { raw in
            if isIPv6 {
                raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_port = port.bigEndian
            } else {
                raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self).pointee.sin_port = port.bigEndian
            }
        }
        return copy
    }

    /// The IP address alone, as text (`127.0.0.1`, `::1`).
    public var ipString: String {
        var buf = [CChar](repeating: 0, count: 64)
        withUnsafeBytes(of: storage) { raw in
            if isIPv6 {
                var a = raw.load(as: sockaddr_in6.self)
                _ = uv_ip6_name(&a, &buf, buf.count)
            } else {
                var a = raw.load(as: sockaddr_in.self)
                _ = uv_ip4_name(&a, &buf, buf.count)
            }
        }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// `127.0.0.1:8080` or `[::1]:8080`.
    public var description: String { isIPv6 ? "[\(ipString)]:\(port)" : "\(ipString):\(port)" }

    /// The address alone, in network order: 4 bytes (IPv4) or 16 (IPv6).
    public var addressBytes: [UInt8] {
        withUnsafeBytes(of: storage) { raw in
            if isIPv6 { return withUnsafeBytes(of: raw.load(as: sockaddr_in6.self).sin6_addr) { Array($0) } }
            return withUnsafeBytes(of: raw.load(as: sockaddr_in.self).sin_addr) { Array($0) }
        }
    }

    /// Address order: IPv4 before IPv6, then by the address's bytes, then by port.
    func ordered(before other: SocketAddress) -> Bool {
        if isIPv6 != other.isIPv6 { return !isIPv6 }
        let (x, y) = (addressBytes, other.addressBytes)
        return x != y ? x.lexicographicallyPrecedes(y) : port < other.port
    }

    /// Same family, address and port (IPv6 scope ids included).
    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        guard a.isIPv6 == b.isIPv6 else { return false }
        return withUnsafeBytes(of: a.storage) { ra in
            withUnsafeBytes(of: b.storage) { rb in
                if a.isIPv6 {
                    let x = ra.load(as: sockaddr_in6.self), y = rb.load(as: sockaddr_in6.self)
                    return x.sin6_port == y.sin6_port && x.sin6_scope_id == y.sin6_scope_id
                        && withUnsafeBytes(of: x.sin6_addr) { xa in withUnsafeBytes(of: y.sin6_addr) { xa.elementsEqual($0) } }
                }
                let x = ra.load(as: sockaddr_in.self), y = rb.load(as: sockaddr_in.self)
                return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr
            }
        }
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self)) }
    }

    /// Whether this machine can send to the address at all: a UDP socket is "connected" to it
    /// (no packet goes out); no such family, no route or no source address means no (`::1` where
    /// IPv6 is off). Two system calls; for the supervisor, not a request path.
    public var isRoutableHere: Bool {
        let fd = socket(isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return withSockAddr { connect(fd, $0, socklen_t(isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)) } == 0
    }
}

public struct AddressError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
