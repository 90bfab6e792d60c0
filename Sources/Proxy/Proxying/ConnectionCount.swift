import Synchronization

/// The connections that hold descriptors across all workers, for `limits.max_connections` (a
/// limit for the whole proxy, like HAProxy's `maxconn`, not per worker): open client connections,
/// and idle pooled upstream connections.
///
/// Idle pooled connections count against the limit because they hold descriptors too. The
/// derived limit (`ConnectionBudget`) gives each client connection two descriptors, its own and
/// its upstream's; a worker whose pool kept the upstream connections of clients that have gone
/// would otherwise let another worker accept new clients whose upstream connections then find no
/// descriptor (EMFILE, a 503). So a new client is accepted only while clients + idle connections
/// stay under the limit, and at the limit idle connections yield: the accepting worker closes its
/// own (`ProxyServer.makeRoomForAClient`), and raises `idleConnectionsWanted` so that the other
/// workers close theirs and pool no more until a client got the room.
///
/// Threading: `Sendable`, shared by every worker. One atomic add per client connection, never per
/// request; each worker publishes its idle count with plain stores into its own padded slot (no
/// read-modify-write on the request path), summed only when a client is about to be accepted.
public final class ConnectionCount: Sendable {
    private let open = Atomic<Int>(0)
    private let idleByWorker: [IdleSlot]
    private let wanted = Atomic<Bool>(false)

    /// `workers`: how many slots publish idle counts (`publishIdle(worker:)` takes an index below it).
    public init(workers: Int = 1) {
        idleByWorker = (0..<max(workers, 1)).map { _ in IdleSlot() }
    }

    /// Whether one more client fits under `limit`, counting idle pooled connections (asked
    /// before accepting; `add` counts the connection).
    func hasRoom(limit: Int) -> Bool {
        var used = open.load(ordering: .relaxed)
        if used >= limit { return false }
        for slot in idleByWorker { used += slot.count.load(ordering: .relaxed) }
        return used < limit
    }

    /// Whether the clients alone leave room under `limit` (the idle connections are what is in the way).
    func clientsHaveRoom(limit: Int) -> Bool { open.load(ordering: .relaxed) < limit }

    func add() { open.wrappingAdd(1, ordering: .relaxed) }

    func release() { open.wrappingSubtract(1, ordering: .relaxed) }

    /// A worker's idle pooled upstream connections, over all its backends (written by that worker only).
    func publishIdle(worker: Int, count: Int) {
        idleByWorker[worker].count.store(count, ordering: .relaxed)
    }

    /// Set while some worker waits to accept a client and the room is held by idle connections
    /// it cannot close itself (another worker's): every worker then closes its idle connections
    /// and stops pooling. Cleared by a worker that found room.
    var idleConnectionsWanted: Bool {
        get { wanted.load(ordering: .relaxed) }
        set { if wanted.load(ordering: .relaxed) != newValue { wanted.store(newValue, ordering: .relaxed) } }
    }
}

/// One worker's idle count, padded to 128 bytes so that workers' slots never share a cache line.
private final class IdleSlot: Sendable {
    let count = Atomic<Int>(0)
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    init() {}
}
