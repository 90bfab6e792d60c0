/// One backend as a worker loop sees it: the shared half (address, health verdict) plus this
/// worker's pool of idle upstream connections and its count of requests in flight.
///
/// Threading: owned by one loop; never crosses threads (the `shared` half does).
public final class Backend {
    public let shared: SharedBackend
    public let pool: UpstreamPool
    /// `shared.authority` as bytes, for the Host header of HTTP/1.0 requests that came without one.
    let authorityBytes: [UInt8]
    /// Each address as text (`127.0.0.1:3001`; the address, then the fallbacks), for the access log.
    private let addressTexts: [[UInt8]]
    /// The current address as text.
    var addressBytes: [UInt8] { addressTexts.count == 1 ? addressTexts[0] : addressTexts[shared.answeringIndex] }
    /// The id as the access log writes it.
    let logID: LogName
    /// This worker's slot in `shared.counters`.
    private let counters: WorkerCounters
    /// This worker's slab in `shared.stats`.
    let stats: CounterSlab
    /// Set when a reload removed the backend: exchanges still running finish here, but their
    /// connections are closed instead of pooled.
    var isRetired = false
    /// An `https://` backend's newest resumable TLS session on this worker: the next connection
    /// offers it and resumes instead of a full handshake.
    var tlsResumption: TLSResumption?

    public init(shared: SharedBackend, worker: Int, pool: UpstreamPool) {
        self.shared = shared
        self.pool = pool
        counters = shared.counters[worker]
        stats = shared.stats[worker]
        authorityBytes = Array(shared.authority.utf8)
        addressTexts = (0..<shared.addressCount).map { Array(shared.address(at: $0).description.utf8) }
        logID = LogName(shared.id)
        pool.counter = counters
    }

    public var id: String { shared.id }
    public var url: String { shared.url }
    /// Where a new connection goes: the address that answered last (`SharedBackend.currentAddress`).
    public var address: SocketAddress { shared.currentAddress }

    /// The health checker's current verdict.
    public var isHealthy: Bool { shared.isHealthy }

    /// Healthy and not ejected by passive health: what the balancer may pick.
    public var isAvailable: Bool { shared.isAvailable }

    /// This worker's share of `max_connections_per_backend` (0: no limit).
    var requestLimit = 0
    /// The newest configuration's pool this backend is in: a request of an older one that
    /// releases the backend also wakes the requests queued under the new one.
    weak var latestUpstream: Upstream?
    /// Whether this worker may send it one more request.
    @inline(__always) var hasRoom: Bool { requestLimit == 0 || activeRequests < requestLimit }

    /// Requests this worker is forwarding to this backend; published for `/_health`.
    public var activeRequests = 0 {
        didSet { counters.activeRequests.store(activeRequests, ordering: .relaxed) }
    }
}
