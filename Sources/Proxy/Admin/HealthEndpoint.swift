/// `GET /_health`: the proxy's own view of its backends, as JSON.
///
/// 200 with `"status":"healthy"` when at least one backend is healthy, else 503 with
/// `"status":"unhealthy"`. Built with `String` on purpose: it is an admin path, not the hot one.
enum HealthEndpoint {
    /// The same view from whichever worker answers: health comes from the shared verdicts and
    /// the counters are summed over all workers. `worker` says which one answered (tests and
    /// operators use it to see connections spread across workers). 200 while any backend is
    /// healthy (as before there were several pools: one dead optional pool should not take the
    /// whole proxy out of an outer load balancer), else 503.
    static func render(_ upstreams: [Upstream], worker: Int, workers: Int) -> (status: UInt16, body: [UInt8]) {
        // A static route's files are always "healthy": they count only when there is nothing else
        // (so a proxy whose every real backend is down still says so).
        let real = upstreams.flatMap(\.backends).filter { $0.shared.config.staticFiles == nil }
        let healthy = real.isEmpty ? !upstreams.allSatisfy(\.backends.isEmpty) : real.contains { $0.isHealthy }
        var json = "{\"status\":\"\(healthy ? "healthy" : "unhealthy")\",\"worker\":\(worker),\"workers\":\(workers),\"backends\":["
        var first = true
        for u in upstreams {
            for backend in u.backends {
                let b = backend.shared
                let record = b.probeRecord
                if !first { json += "," }
                first = false
                json += "{\"id\":\(JSONText.quote(b.id)),\"upstream\":\(JSONText.quote(u.name)),\"url\":\(JSONText.quote(b.url)),"
                json += "\"address\":\(JSONText.quote(b.currentAddress.description)),"
                json += "\"healthy\":\(b.isHealthy),\"active_connections\":\(b.activeRequests),"
                json += "\"idle_pooled_connections\":\(b.idlePooledConnections),"
                json += "\"consecutive_successes\":\(record.consecutiveSuccesses),\"consecutive_failures\":\(record.consecutiveFailures),"
                json += "\"last_error\":\(record.lastError.map(JSONText.quote) ?? "null"),"
                json += "\"ejected\":\(b.isEjected),\"ejections\":\(b.ejections),\"failed_attempts_in_a_row\":\(b.consecutiveFailures),"
                json += "\"state\":\"\(b.adminState)\",\"weight\":\(b.effectiveWeight)"
                if let name = b.nameRecord {
                    // A backend given by host name: what its lookups found (every endpoint of it
                    // shows the same record).
                    let r = name.snapshot
                    json += ",\"backend\":\(JSONText.quote(b.backendID)),\"dns\":{\"host\":\(JSONText.quote(name.host)),"
                    json += "\"addresses\":[\(r.addresses.map(JSONText.quote).joined(separator: ","))],"
                    json += "\"lookups\":\(r.lookups),\"failed_lookups\":\(r.failedLookups),\"changes\":\(r.changes),"
                    json += "\"last_error\":\(r.lastError.map(JSONText.quote) ?? "null")}"
                }
                json += "}"
            }
        }
        json += "]}\n"
        return (healthy ? 200 : 503, Array(json.utf8))
    }
}
