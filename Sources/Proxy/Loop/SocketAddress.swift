import CUV

/// An IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible {
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
    /// thread pool. IPv4 answers are preferred, so `localhost` means 127.0.0.1 — what a dev
    /// server bound to 127.0.0.1 expects.
    public static func resolve(host: String, port: UInt16) throws(AddressError) -> SocketAddress {
        if let literal = SocketAddress(ip: host, port: port) { return literal }
        var hints = resolverHints
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw AddressError(message: "cannot resolve host \"\(host)\": \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        return try choosing(from: first, host: host)
    }

    /// What both ways of resolving ask `getaddrinfo` for.
    static var resolverHints: addrinfo {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        return hints
    }

    /// The address to use from a `getaddrinfo` answer: the first IPv4 one, else the first IPv6.
    static func choosing(from first: UnsafeMutablePointer<addrinfo>, host: String) throws(AddressError) -> SocketAddress {
        var chosen: UnsafeMutablePointer<addrinfo>? = nil
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if ai.pointee.ai_family == AF_INET { chosen = ai; break }
            if chosen == nil && ai.pointee.ai_family == AF_INET6 { chosen = ai }
            p = ai.pointee.ai_next
        }
        guard let ai = chosen, let addr = ai.pointee.ai_addr else {
            throw AddressError(message: "host \"\(host)\" has no IPv4 or IPv6 address")
        }
        var s = sockaddr_storage()
        withUnsafeMutableBytes(of: &s) { dst in
            dst.baseAddress!.copyMemory(from: addr, byteCount: Int(ai.pointee.ai_addrlen))
        }
        return SocketAddress(storage: s)
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

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self)) }
    }
}

public struct AddressError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
