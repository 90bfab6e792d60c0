/// How an attempt on a backend ended, as the balancing policies learn it.
enum AttemptOutcome: Equatable {
    /// A complete response came back (any status: a 5xx is the backend's answer, not a failure
    /// of the connection; passive health may still count it).
    case response(status: UInt16)
    /// The connection could not be opened (refused, timed out, unreachable).
    case connectFailure
    /// The backend broke the exchange: reset or closed early, or sent what cannot be read.
    case upstreamFailure
    /// No response head within `upstream_ms`.
    case timeout
    /// Not the backend's doing: the client went away or broke its request, the proxy ran out of
    /// a local resource, or a pooled connection lost the keep-alive race.
    case notTheBackend
}

/// The balancer of one upstream on one worker: it picks a backend for each attempt and hears what
/// became of it — `started` when a request goes to a backend, `finished` with the outcome and the
/// time to the response head, `healthChanged` when the active checks change a verdict. Policies
/// (issue 15: least request, p2c EWMA, consistent hashing, outlier detection) are cases of
/// `Policy` dispatched by `switch` — no existential on the request path.
///
/// In-flight counts are this worker's view (`Backend.activeRequests`, published for `/_health`);
/// the summed counters across workers are for reporting. Threading: one worker's loop.
struct LoadBalancer {
    enum Policy {
        case roundRobin(RoundRobinBalancer)
    }

    private(set) var policy: Policy

    init(_ policy: Policy = .roundRobin(RoundRobinBalancer())) { self.policy = policy }

    /// A healthy backend not yet tried for this request, or nil when there is none.
    mutating func pick(from backends: [Backend], excluding tried: AttemptSet) -> Int? {
        switch policy {
        case .roundRobin(var rr):
            let picked = rr.pick(from: backends, excluding: tried)
            policy = .roundRobin(rr)
            return picked
        }
    }

    /// Whether any backend is healthy at all (a 503 "no healthy backend" rather than a 502).
    /// Health is the checks' verdict, the same for every policy.
    func anyHealthy(_ backends: [Backend]) -> Bool {
        backends.contains { $0.isHealthy }
    }

    /// A request went to `backends[index]`.
    func started(_ index: Int, of backends: [Backend]) {
        backends[index].activeRequests += 1
    }

    /// The request that `started` on `backends[index]` is done with it. `headMicros`: the time from
    /// the pick to the response head, when one came.
    func finished(_ index: Int, of backends: [Backend], outcome: AttemptOutcome, headMicros: UInt64?) {
        backends[index].activeRequests -= 1
        switch policy {
        case .roundRobin:
            break  // round-robin learns nothing from outcomes
        }
    }

    /// The active health checks changed the verdict on `backends[index]`.
    mutating func healthChanged(_ index: Int, healthy: Bool) {
        switch policy {
        case .roundRobin:
            break  // picks skip unhealthy backends whatever the policy
        }
    }
}
