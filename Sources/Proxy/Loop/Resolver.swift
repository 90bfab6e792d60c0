import CUV

/// Resolves host names without blocking the loop: each name is looked up with `uv_getaddrinfo`,
/// which runs `getaddrinfo` on libuv's thread pool and calls back on the loop thread. A slow or
/// unreachable DNS server then delays only the answer, not the loop's timers and signals (the
/// supervisor's health probes and SIGTERM).
///
/// IP literals need no lookup and are answered at once. The choice among the answers is the one
/// `SocketAddress.resolve` makes (the first IPv4 address, else the first IPv6 one).
///
/// Threading: loop thread only; completions run on it.
public final class HostResolver {
    private let loop: EventLoop
    private var pending: [Lookup] = []

    public init(loop: EventLoop) { self.loop = loop }

    /// Whether lookups are under way.
    public var isBusy: Bool { !pending.isEmpty }

    /// Resolves every `(host, port)` and calls `completion` once, with one result per name in the
    /// same order, when the last lookup has answered — synchronously, before returning, when
    /// every name is an IP literal (or `names` is empty). After `cancelAll()` it is not called.
    public func resolve(_ names: [(host: String, port: UInt16)],
                        completion: @escaping ([Result<SocketAddress, AddressError>]) -> Void) {
        var results = [Result<SocketAddress, AddressError>?](repeating: nil, count: names.count)
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
                results[index] = .success(literal)
                continue
            }
            waiting += 1
            let lookup = Lookup(host: name.host, port: name.port) { [weak self] lookup, result in
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
    /// not started yet is cancelled; one already running on the thread pool cannot be, and the
    /// loop keeps running until it returns (bounded by the resolver's own timeouts).
    public func cancelAll() {
        let lookups = pending
        pending.removeAll()
        for lookup in lookups { lookup.cancel() }
    }
}

/// One `uv_getaddrinfo` request. Ownership: `start` stores one retain of `self` in `req->data`;
/// the callback (which libuv always runs, with `UV_EAI_CANCELED` after `uv_cancel`) takes it
/// back and frees the request.
private final class Lookup {
    let host: String
    let port: UInt16
    private var completion: ((Lookup, Result<SocketAddress, AddressError>) -> Void)?
    private var req: UnsafeMutablePointer<uv_getaddrinfo_t>?

    init(host: String, port: UInt16, completion: @escaping (Lookup, Result<SocketAddress, AddressError>) -> Void) {
        self.host = host
        self.port = port
        self.completion = completion
    }

    func start(on loop: EventLoop) {
        let req = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passRetained(self).toOpaque()
        var hints = SocketAddress.resolverHints
        let rc = uv_getaddrinfo(loop.uvLoop, req, { req, status, result in
            guard let req else { return }
            let me = Unmanaged<Lookup>.fromOpaque(req.pointee.data).takeRetainedValue()
            me.req = nil
            req.deallocate()
            defer { uv_freeaddrinfo(result) }
            me.answered(status: status, result: result)
        }, host, String(port), &hints)
        if rc < 0 {
            Unmanaged<Lookup>.fromOpaque(req.pointee.data).release()
            req.deallocate()
            answered(status: rc, result: nil)
        } else {
            self.req = req
        }
    }

    private func answered(status: Int32, result: UnsafeMutablePointer<addrinfo>?) {
        guard let completion else { return }
        self.completion = nil
        guard status == 0, let first = result else {
            completion(self, .failure(AddressError(message: "cannot resolve host \"\(host)\": \(UVError(status).message)")))
            return
        }
        do throws(AddressError) {
            completion(self, .success(try SocketAddress.choosing(from: first, host: host)))
        } catch {
            completion(self, .failure(error))
        }
    }

    func cancel() {
        completion = nil
        if let req { _ = uv_cancel(cuv_getaddrinfo_as_req(req)) }
    }
}
