
/// `GET /_status` (a self-contained HTML page) and `GET /_status.json` (what the page polls):
/// the live view a developer keeps open in a browser tab.
///
/// The JSON carries cumulative counters and per-bucket latency counts; the page derives
/// requests/s, error rates and p50/p99 from the difference between two polls, so the proxy keeps
/// no time series and the numbers cover exactly the interval the viewer saw.
enum StatusEndpoint {
    static func page(jsonPath: String) -> [UInt8] {
        Array(StatusPageHTML.template.replacing("__STATUS_JSON_PATH__", with: jsonPath).utf8)
    }

    static func json(_ settings: ServerSettings, metrics: ProxyMetrics, workers: Int) -> [UInt8] {
        let w = metrics.workers
        var j = "{\"time_ms\":\(Platform.wallClockMs()),\"uptime_s\":\(metrics.uptimeSeconds),\"workers\":\(workers),"
        j += "\"generation\":\(settings.generation),"
        j += "\"connections\":{\"clients\":\(w.sum(WorkerStats.clientsOpen)),\"tunnels\":\(w.sum(WorkerStats.tunnelsOpen)),"
        j += "\"http2\":\(w.sum(WorkerStats.http2ConnectionsOpen)),\"http2_streams_total\":\(w.sum(WorkerStats.http2Streams))},"
        // µs × 1000 written as "seconds" is the bound in milliseconds.
        j += "\"buckets_ms\":[" + RequestStats.boundsMicros.map { Exposition.seconds($0 * 1000) }.joined(separator: ",") + "],"
        j += "\"unrouted\":\(stats(RequestTotals(w))),"
        j += "\"upstreams\":["
        for (ui, u) in settings.upstreams.enumerated() {
            if ui > 0 { j += "," }
            j += "{\"name\":\(JSONText.quote(u.name)),\"unassigned\":\(stats(RequestTotals(u.shared.stats))),\"backends\":["
            for (bi, b) in u.backends.enumerated() {
                if bi > 0 { j += "," }
                let record = b.shared.probeRecord
                j += "{\"id\":\(JSONText.quote(b.id)),\"url\":\(JSONText.quote(b.url)),"
                j += "\"address\":\(JSONText.quote(b.address.description)),\"healthy\":\(b.isHealthy),"
                j += "\"last_error\":\(record.lastError.map(JSONText.quote) ?? "null"),"
                j += "\"active\":\(max(b.shared.activeRequests, 0)),\"idle\":\(max(b.shared.idlePooledConnections, 0)),"
                j += "\"probe_failures\":\(record.failures),\"ejected\":\(b.shared.isEjected),\"ejections\":\(b.shared.ejections),\"state\":\"\(b.shared.adminState)\",\"weight\":\(b.shared.effectiveWeight),"
                let totals = RequestTotals(b.shared.stats)
                j += "\"responses\":\(responses(totals)),\"duration\":\(histogram(totals)),"
                j += "\"upstream_duration\":\(histogram(RequestTotals.upstreamTimes(b.shared.stats)))}"
            }
            j += "]}"
        }
        j += "]}\n"
        return Array(j.utf8)
    }

    private static func stats(_ t: RequestTotals) -> String {
        "{\"responses\":\(responses(t)),\"duration\":\(histogram(t))}"
    }

    private static func responses(_ t: RequestTotals) -> String {
        "{\"1xx\":\(t.responses[0]),\"2xx\":\(t.responses[1]),\"3xx\":\(t.responses[2]),\"4xx\":\(t.responses[3]),\"5xx\":\(t.responses[4])}"
    }

    private static func histogram(_ t: RequestTotals) -> String {
        "{\"counts\":[" + t.buckets.map(String.init).joined(separator: ",") + "],\"sum_ms\":\(Double(t.sumMicros) / 1000)}"
    }
}
