/// What the proxy last learned about one backend's host name (a name, not an IP literal): the
/// addresses in use, how many lookups ran and failed, and why the last one failed. `/_health`
/// shows it next to every endpoint of the backend.
///
/// Created by the supervisor when the backend enters the configuration; every endpoint of the
/// backend holds the same instance, and a re-resolution that changes the endpoints keeps it.
/// Threading: `Sendable`; written by the supervisor's loop, read by any worker (behind a lock;
/// admin paths only, never a request path).
public final class BackendNameRecord: Sendable {
    public let host: String
    private let state: Locked<Snapshot>

    /// One consistent view of the record.
    public struct Snapshot: Sendable, Equatable {
        /// The addresses in use (`127.0.0.1`, `::1`), in address order.
        public var addresses: [String]
        public var lookups = 0
        public var failedLookups = 0
        /// Times the addresses changed since the backend entered the configuration.
        public var changes = 0
        /// Why the last lookup failed; nil once one succeeds again (the addresses stay meanwhile).
        public var lastError: String?
    }

    /// What the runtime API last set for the backend as a whole (by its id, not one endpoint's
    /// name): what an address that appears later starts with. Until the next reload.
    struct RuntimeChanges: Sendable, Equatable {
        var state = SharedBackend.AdminState.enabled
        var weight = 0  // 0: the configured one
    }
    private let runtime = Locked(RuntimeChanges())
    var backendRuntimeChanges: RuntimeChanges { runtime.withLock { $0 } }
    /// A reload starts from the file again (as `SharedBackend.resetRuntimeChanges`).
    func resetBackendRuntimeChanges() { runtime.withLock { $0 = RuntimeChanges() } }

    func setBackendRuntimeChanges(state: SharedBackend.AdminState? = nil, weight: Int? = nil) {
        runtime.withLock { r in
            if let state { r.state = state }
            if let weight { r.weight = weight }
        }
    }

    public init(host: String, addresses: [SocketAddress]) {
        self.host = host
        state = Locked(Snapshot(addresses: addresses.sorted { $0.ordered(before: $1) }.map(\.ipString), lookups: 1))
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// A lookup answered; `changedTo` carries the new addresses when they differ from those in use.
    func noteLookup(changedTo addresses: [SocketAddress]?) {
        state.withLock { s in
            s.lookups += 1
            s.lastError = nil
            if let addresses {
                s.addresses = addresses.sorted { $0.ordered(before: $1) }.map(\.ipString)
                s.changes += 1
            }
        }
    }

    /// A lookup failed: the addresses in use stay. Returns whether this starts a run of failures
    /// (the first is logged as a warning, the rest only counted).
    func noteFailure(_ reason: String) -> Bool {
        state.withLock { s in
            s.lookups += 1
            s.failedLookups += 1
            let first = s.lastError == nil
            s.lastError = reason
            return first
        }
    }
}

/// The endpoints of a configured backend: one `SharedBackend` per address of its host (one for
/// an IP literal), named `id` when there is one and `id@address` when there are several.
enum BackendEndpoints {
    /// Endpoints of `backend` at `addresses` (in address order). An endpoint of `current` with the
    /// same configuration, address and name is kept as it is (its pools, health and counters
    /// carry over); a new one inherits the health verdict of an entry of `current` at the same
    /// address (a backend renamed, or a name that went from one address to several, which
    /// renames its endpoint) and, with `keepingRuntimeChanges` (a re-resolution, not a reload),
    /// the runtime API's state and weight: an address that stays keeps its endpoint's, a new one
    /// takes what was set for the backend as a whole (`BackendNameRecord`).
    /// `otherFamily`: the name's addresses of the other family; a name with a single preferred
    /// address gets them as its endpoint's fallbacks (`SharedBackend.fallbacks`).
    static func make(_ backend: BackendConfig, addresses: [SocketAddress], current: [SharedBackend], workers: Int,
                     tls: TLSContext?, record: BackendNameRecord?, keepingRuntimeChanges: Bool = false,
                     otherFamily: [SocketAddress] = []) -> [SharedBackend] {
        let sorted = addresses.sorted { $0.ordered(before: $1) }
        let fallbacks = Self.fallbacks(sorted, otherFamily: otherFamily)
        return sorted.map { address in
            let id = sorted.count == 1 ? backend.id : "\(backend.id)@\(address.ipString)"
            if let kept = current.first(where: { $0.id == id && $0.address == address && $0.fallbacks == fallbacks && $0.isSame(as: backend)
                                                 && $0.nameRecord === record }) {
                kept.setConfiguredWeight(backend.weight)
                return kept
            }
            let previous = current.first { $0.address == address }
            let made = SharedBackend(config: backend, address: address, workers: workers, inheriting: previous, tls: tls,
                                     id: id, nameRecord: record, fallbacks: fallbacks)
            if keepingRuntimeChanges {
                // The address was there: its own state; a new address: the backend's.
                if let previous {
                    made.copyRuntimeChanges(from: previous)
                } else if let record {
                    let r = record.backendRuntimeChanges
                    made.setAdminState(r.state)
                    made.setWeight(r.weight)
                }
            }
            return made
        }
    }

    /// The fallbacks a name with these preferred addresses gets: its other family's addresses
    /// (in address order, those this machine can route to) when it has one preferred address;
    /// none otherwise.
    static func fallbacks(_ addresses: [SocketAddress], otherFamily: [SocketAddress]) -> [SocketAddress] {
        guard addresses.count == 1 else { return [] }
        return otherFamily.sorted { $0.ordered(before: $1) }.filter(\.isRoutableHere)
    }

    /// Whether `addresses` are the addresses `endpoints` are at (in any order), with the same
    /// fallbacks (`otherFamily`).
    static func same(_ endpoints: [SharedBackend], _ addresses: [SocketAddress], otherFamily: [SocketAddress] = []) -> Bool {
        endpoints.count == addresses.count && addresses.allSatisfy { a in endpoints.contains { $0.address == a } }
            && (endpoints.count != 1 || endpoints[0].fallbacks == fallbacks(addresses, otherFamily: otherFamily))
    }
}
