import CDNS
import CUV

/// The addresses a host name stands for, as the proxy uses them: every IPv4 address of the
/// answer, or every IPv6 one when it has none (so `localhost` means 127.0.0.1, what a dev server
/// bound to 127.0.0.1 expects — Envoy's `V4_PREFERRED`), in the answer's order without repeats.
public struct ResolvedAddresses: Sendable, Equatable {
    public var addresses: [SocketAddress]
    /// The shortest time to live of the records used, when the answer said (DNS servers asked
    /// directly); nil from the system resolver.
    public var ttlS: Int?
    /// How many addresses the answer had when there were more than `maxAddresses` (the first
    /// `maxAddresses` in address order are used, so the choice does not follow the answer's order).
    public var truncatedFrom: Int?
    /// The other family's addresses of the answer (at most 8): a name with one address of the
    /// preferred family uses them as fallbacks (`localhost` → 127.0.0.1, then ::1 for a dev
    /// server that listens on IPv6 only).
    public var otherFamily: [SocketAddress] = []

    /// At most this many endpoints per name.
    public static let maxAddresses = 256

    public init(addresses: [SocketAddress], ttlS: Int? = nil, truncatedFrom: Int? = nil, otherFamily: [SocketAddress] = []) {
        self.addresses = addresses
        self.ttlS = ttlS
        self.truncatedFrom = truncatedFrom
        self.otherFamily = otherFamily
    }

    /// The preferred family's addresses of `all`, first occurrences only; past `maxAddresses`,
    /// the lowest in address order. `found`: how many the answer had, when more than `all` holds.
    init(choosingFrom all: [(SocketAddress, ttlS: Int?)], found: Int? = nil) {
        let preferIPv4 = all.contains { !$0.0.isIPv6 }
        var chosen: [SocketAddress] = []
        var ttl: Int?
        for (address, t) in all where address.isIPv6 != preferIPv4 && !chosen.contains(address) {
            chosen.append(address)
            if let t { ttl = min(ttl ?? t, t) }
        }
        var truncated = found.flatMap { $0 > all.count ? $0 : nil }
        if chosen.count > Self.maxAddresses {
            truncated = truncated ?? chosen.count
            chosen = Array(chosen.sorted { $0.ordered(before: $1) }.prefix(Self.maxAddresses))
        }
        var other: [SocketAddress] = []
        for (address, _) in all where address.isIPv6 == preferIPv4 && !other.contains(address) && other.count < 8 { other.append(address) }
        self.init(addresses: chosen, ttlS: ttl, truncatedFrom: truncated, otherFamily: other)
    }
}

/// DNS servers to ask directly instead of the system resolver (the config's top-level
/// `"resolver"`), in c-ares's form: `127.0.0.1:53,[::1]:5353`.
public struct DNSServers: Sendable, Equatable {
    public var list: String
    public var timeoutMs: Int
    public var attempts: Int

    public init(list: String, timeoutMs: Int, attempts: Int) {
        self.list = list
        self.timeoutMs = timeoutMs
        self.attempts = attempts
    }

    /// Asks the servers for `host`, blocking the calling thread (a thread-pool thread, or start-up
    /// before any loop runs) for at most about `timeoutMs` × `attempts` per server, or until
    /// `cancel` (see `cdns_cancel`) is set.
    func lookup(host: String, port: UInt16, cancel: UnsafePointer<Int32>? = nil) -> Result<ResolvedAddresses, AddressError> {
        let max = 4096
        var out = [cdns_address](repeating: cdns_address(), count: max)
        var error = [CChar](repeating: 0, count: 256)
        var found: Int32 = 0
        let n = cdns_lookup(list, host, Int32(timeoutMs), Int32(attempts), cancel, &out, Int32(max), &found, &error, error.count)
        guard n >= 0 else {
            let reason = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            return .failure(AddressError(message: "cannot resolve host \"\(host)\" (resolver \(list)): \(reason)"))
        }
        let all: [(SocketAddress, ttlS: Int?)] = out.prefix(Int(n)).compactMap { a in
            SocketAddress(family: a.family, bytes: a.bytes, port: port).map { ($0, ttlS: Int(a.ttl_s)) }
        }
        let resolved = ResolvedAddresses(choosingFrom: all, found: Int(found))
        guard !resolved.addresses.isEmpty else {
            return .failure(AddressError(message: "host \"\(host)\" has no IPv4 or IPv6 address (resolver \(list))"))
        }
        return .success(resolved)
    }
}

/// Resolves host names without blocking the loop: through the system resolver with
/// `uv_getaddrinfo` (which runs `getaddrinfo` on libuv's thread pool), or by asking `DNSServers`
/// with c-ares on the same thread pool; completions run on the loop thread. A slow or
/// unreachable DNS server then delays only the answer, not the loop's timers and signals (the
/// supervisor's health probes and SIGTERM).
///
/// IP literals need no lookup and are answered at once.
///
/// Threading: loop thread only; completions run on it.
public final class HostResolver {
    private let loop: EventLoop
    private var pending: [Lookup] = []

    public init(loop: EventLoop) { self.loop = loop }

    /// Whether lookups are under way.
    public var isBusy: Bool { !pending.isEmpty }

    /// Whether every lookup under way asks DNS servers directly (c-ares), so `cancelAll()` ends
    /// them within 100 ms rather than leaving `getaddrinfo` calls running on the thread pool.
    public var allCancellable: Bool { pending.allSatisfy { $0.servers != nil } }

    /// Resolves every `(host, port)` to one address (the first of `ResolvedAddresses`) — for
    /// listen addresses; see `resolveAll`.
    public func resolve(_ names: [(host: String, port: UInt16)],
                        completion: @escaping ([Result<SocketAddress, AddressError>]) -> Void) {
        resolveAll(names.map { (host: $0.host, port: $0.port, servers: nil) }) { results in
            completion(results.map { $0.map { $0.addresses[0] } })
        }
    }

    /// Resolves every `(host, port)` to all its addresses (never an empty list: no address is a
    /// failure), asking the name's `servers` when given, else the system resolver. Calls `completion` once,
    /// with one result per name in the same order, when the last lookup has answered —
    /// synchronously, before returning, when every name is an IP literal (or `names` is empty).
    /// After `cancelAll()` it is not called.
    public func resolveAll(_ names: [(host: String, port: UInt16, servers: DNSServers?)],
                           completion: @escaping ([Result<ResolvedAddresses, AddressError>]) -> Void) {
        var results = [Result<ResolvedAddresses, AddressError>?](repeating: nil, count: names.count)
        var waiting = 0
        var started = false
        var delivered = false
        func deliverIfDone() {
            guard started, waiting == 0, !delivered else { return }
            delivered = true
            completion(results.map { $0! })
        }
        for (index, name) in names.enumerated() {
            if let literal = SocketAddress(ip: name.host, port: name.port) {
                results[index] = .success(ResolvedAddresses(addresses: [literal]))
                continue
            }
            waiting += 1
            let lookup = Lookup(host: name.host, port: name.port, servers: name.servers) { [weak self] lookup, result in
                self?.pending.removeAll { $0 === lookup }
                results[index] = result
                waiting -= 1
                deliverIfDone()
            }
            pending.append(lookup)
            lookup.start(on: loop)
        }
        started = true
        deliverIfDone()
    }

    /// Drops every lookup under way: their completions will not run. A lookup that libuv has
    /// not started yet is cancelled; a c-ares one already running gives up within 100 ms; a
    /// `getaddrinfo` already running cannot be stopped, and the loop keeps running until it
    /// returns (bounded by the system resolver's own timeouts).
    public func cancelAll() {
        let lookups = pending
        pending.removeAll()
        for lookup in lookups { lookup.cancel() }
    }
}

/// One lookup on libuv's thread pool: a `uv_getaddrinfo_t` (system resolver) or a `uv_work_t`
/// running `DNSServers.lookup`. Ownership: `start` stores one retain of `self` in the request's
/// `data`; the completion callback (which libuv always runs, with `UV_ECANCELED` after
/// `uv_cancel`) takes it back and frees the request.
private final class Lookup {
    let host: String
    let port: UInt16
    let servers: DNSServers?
    private var completion: ((Lookup, Result<ResolvedAddresses, AddressError>) -> Void)?
    private var addrinfoReq: UnsafeMutablePointer<uv_getaddrinfo_t>?
    private var workReq: UnsafeMutablePointer<uv_work_t>?
    /// Set by `cancel()` (atomically, in C) for a running c-ares lookup, which then gives up
    /// within 100 ms, so neither a reload nor the loop's end waits out a silent server. Freed
    /// with this object, which the work request keeps alive until its completion.
    private let cancelFlag: UnsafeMutablePointer<Int32> = {
        let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        p.initialize(to: 0)
        return p
    }()
    /// Written by the thread-pool thread before libuv hands the request back to the loop
    /// (`uv_queue_work` orders the two), read on the loop thread after.
    private var workResult: Result<ResolvedAddresses, AddressError>?

    init(host: String, port: UInt16, servers: DNSServers?,
         completion: @escaping (Lookup, Result<ResolvedAddresses, AddressError>) -> Void) {
        self.host = host
        self.port = port
        self.servers = servers
        self.completion = completion
    }

    deinit { cancelFlag.deallocate() }

    func start(on loop: EventLoop) {
        if servers != nil { return startWork(on: loop) }
        let req = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passRetained(self).toOpaque()
        var hints = SocketAddress.resolverHints
        let rc = uv_getaddrinfo(loop.uvLoop, req, { req, status, result in
            guard let req else { return }
            let me = Unmanaged<Lookup>.fromOpaque(req.pointee.data).takeRetainedValue()
            me.addrinfoReq = nil
            req.deallocate()
            defer { uv_freeaddrinfo(result) }
            guard status == 0, let first = result else {
                return me.answered(.failure(AddressError(message: "cannot resolve host \"\(me.host)\": \(UVError(status).message)")))
            }
            me.answered(SocketAddress.allChosen(from: first, host: me.host))
        }, host, String(port), &hints)
        if rc < 0 {
            Unmanaged<Lookup>.fromOpaque(req.pointee.data).release()
            req.deallocate()
            answered(.failure(AddressError(message: "cannot resolve host \"\(host)\": \(UVError(rc).message)")))
        } else {
            addrinfoReq = req
        }
    }

    private func startWork(on loop: EventLoop) {
        let req = UnsafeMutablePointer<uv_work_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let rc = uv_queue_work(loop.uvLoop, req, { req in
            guard let req else { return }
            let me = Unmanaged<Lookup>.fromOpaque(req.pointee.data).takeUnretainedValue()
            me.workResult = me.servers!.lookup(host: me.host, port: me.port, cancel: me.cancelFlag)
        }, { req, status in
            guard let req else { return }
            let me = Unmanaged<Lookup>.fromOpaque(req.pointee.data).takeRetainedValue()
            me.workReq = nil
            req.deallocate()
            me.answered(me.workResult ?? .failure(AddressError(message: "lookup of \"\(me.host)\" cancelled")))
        })
        if rc < 0 {
            Unmanaged<Lookup>.fromOpaque(req.pointee.data).release()
            req.deallocate()
            answered(.failure(AddressError(message: "cannot resolve host \"\(host)\": \(UVError(rc).message)")))
        } else {
            workReq = req
        }
    }

    private func answered(_ result: Result<ResolvedAddresses, AddressError>) {
        guard let completion else { return }
        self.completion = nil
        completion(self, result)
    }

    func cancel() {
        completion = nil
        if let addrinfoReq { _ = uv_cancel(cuv_getaddrinfo_as_req(addrinfoReq)) }
        if let workReq {
            cdns_cancel(cancelFlag)
            _ = uv_cancel(cuv_work_as_req(workReq))
        }
    }
}
