/// `GET /_metrics`: every counter in the Prometheus text exposition format (version 0.0.4).
///
/// The hot path only bumps per-worker counters (`CounterSlab`); this sums them over the workers
/// at scrape time. Built with `String`: it is an admin path, read every few seconds at most.
enum MetricsEndpoint {
    static let contentType: StaticString = "text/plain; version=0.0.4; charset=utf-8"

    static func render(_ settings: ServerSettings, metrics: ProxyMetrics, workers: Int) -> [UInt8] {
        var text = Exposition()
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"]

        text.family("proxy_requests_total", "counter",
                    "Requests answered, by upstream, backend and status class (empty labels: answered by the proxy itself or without a backend).")
        func requests(_ labels: String, _ totals: RequestTotals) {
            for (i, c) in classes.enumerated() { text.sample("proxy_requests_total", labels + ",code=\"\(c)\"", totals.responses[i]) }
        }
        let unrouted = RequestTotals(metrics.workers)
        requests("upstream=\"\",backend=\"\"", unrouted)
        for u in settings.upstreams {
            let up = Exposition.escape(u.name)
            requests("upstream=\"\(up)\",backend=\"\"", RequestTotals(u.shared.stats))
            for b in u.backends { requests("upstream=\"\(up)\",backend=\"\(Exposition.escape(b.id))\"", RequestTotals(b.shared.stats)) }
        }

        text.family("proxy_request_duration_seconds", "histogram",
                    "Time from a request's first byte to the end of its response, by upstream and backend.")
        text.histogram("proxy_request_duration_seconds", "upstream=\"\",backend=\"\"", unrouted)
        for u in settings.upstreams {
            let up = Exposition.escape(u.name)
            text.histogram("proxy_request_duration_seconds", "upstream=\"\(up)\",backend=\"\"", RequestTotals(u.shared.stats))
            for b in u.backends {
                text.histogram("proxy_request_duration_seconds", "upstream=\"\(up)\",backend=\"\(Exposition.escape(b.id))\"",
                               RequestTotals(b.shared.stats))
            }
        }

        text.family("proxy_upstream_response_duration_seconds", "histogram",
                    "Time from picking a backend to receiving its response head.")
        for u in settings.upstreams {
            for b in u.backends {
                text.histogram("proxy_upstream_response_duration_seconds",
                               "upstream=\"\(Exposition.escape(u.name))\",backend=\"\(Exposition.escape(b.id))\"",
                               RequestTotals.upstreamTimes(b.shared.stats))
            }
        }

        text.family("proxy_backend_up", "gauge", "1 while the health checks pass, else 0.")
        for u in settings.upstreams {
            for b in u.backends { text.sample("proxy_backend_up", backendLabels(u, b), UInt64(b.isHealthy ? 1 : 0)) }
        }
        text.family("proxy_upstream_retried_total", "counter",
                    "Requests sent to another backend after a try failed (retries), by what the try met.")
        for u in settings.upstreams {
            let up = Exposition.escape(u.name)
            for (i, condition) in RetryCondition.allCases.enumerated() where condition != .connectFailure {
                text.sample("proxy_upstream_retried_total", "upstream=\"\(up)\",reason=\"\(condition.rawValue)\"", u.shared.retryStats.sum(i))
            }
        }
        text.family("proxy_upstream_retries_over_budget_total", "counter", "Retries the retry budget refused (the failure was answered).")
        for u in settings.upstreams {
            text.sample("proxy_upstream_retries_over_budget_total", "upstream=\"\(Exposition.escape(u.name))\"",
                        u.shared.retryStats.sum(SharedUpstream.retriesOverBudget))
        }
        text.family("proxy_backend_ejected", "gauge", "1 while passive health (outlier_detection) has ejected the backend, else 0.")
        for u in settings.upstreams {
            for b in u.backends { text.sample("proxy_backend_ejected", backendLabels(u, b), UInt64(b.shared.isEjected ? 1 : 0)) }
        }
        text.family("proxy_backend_ejections_total", "counter", "Ejections by passive health (outlier_detection).")
        for u in settings.upstreams {
            for b in u.backends { text.sample("proxy_backend_ejections_total", backendLabels(u, b), UInt64(b.shared.ejections)) }
        }
        text.family("proxy_backend_probe_failures_total", "counter", "Failed health probes.")
        for u in settings.upstreams {
            for b in u.backends { text.sample("proxy_backend_probe_failures_total", backendLabels(u, b), b.shared.probeRecord.failures) }
        }
        text.family("proxy_upstream_connections", "gauge", "Connections to backends: in use by a request, or idle in the pool.")
        for u in settings.upstreams {
            for b in u.backends {
                text.sample("proxy_upstream_connections", backendLabels(u, b) + ",state=\"active\"", UInt64(max(b.shared.activeRequests, 0)))
                text.sample("proxy_upstream_connections", backendLabels(u, b) + ",state=\"idle\"", UInt64(max(b.shared.idlePooledConnections, 0)))
            }
        }

        let w = metrics.workers
        // Unlabelled families: (name, type, help, value).
        let scalars: [(String, String, String, UInt64)] = [
            ("proxy_client_connections", "gauge", "Open client connections.", w.sum(WorkerStats.clientsOpen)),
            ("proxy_tunnels", "gauge", "Open tunnels (WebSockets and other protocol switches).", w.sum(WorkerStats.tunnelsOpen)),
            ("proxy_http2_connections", "gauge", "Open HTTP/2 client connections (h2 and h2c).", w.sum(WorkerStats.http2ConnectionsOpen)),
            ("proxy_http2_connections_total", "counter", "HTTP/2 client connections opened.", w.sum(WorkerStats.http2Connections)),
            ("proxy_http2_streams_total", "counter", "HTTP/2 streams clients opened (each one request).", w.sum(WorkerStats.http2Streams)),
            ("proxy_http2_abusive_connections_total", "counter",
             "HTTP/2 connections ended with GOAWAY for abusing the protocol (floods, resets, glitches past http2.max_glitches).",
             w.sum(WorkerStats.http2AbusiveConnections)),
            ("proxy_client_connections_accepted_total", "counter", "Client connections accepted.",
             w.sum(WorkerStats.connectionsAccepted)),
            ("proxy_client_bytes_received_total", "counter", "Bytes read from clients.", w.sum(WorkerStats.bytesReceived)),
            ("proxy_client_bytes_sent_total", "counter", "Bytes written to clients.", w.sum(WorkerStats.bytesSent)),
            ("proxy_upstream_retries_total", "counter", "Requests sent again on a fresh connection after a pooled one failed.",
             w.sum(WorkerStats.retries)),
            ("proxy_config_generation", "gauge", "Number of the configuration in use (1 at start, +1 per reload).",
             UInt64(settings.generation)),
            ("proxy_access_log_lines_total", "counter", "Access log lines written.", metrics.accessLog.counts.written),
            ("proxy_access_log_dropped_lines_total", "counter",
             "Access log lines dropped because the destination could not keep up (or failed).", metrics.accessLog.counts.dropped),
            ("proxy_workers", "gauge", "Worker loops.", UInt64(workers)),
            ("proxy_rate_limit_store_errors_total", "counter",
             "Requests whose global rate limit Redis could not decide (down, slow, refusing): let through or refused as redis.on_error says.",
             w.sum(WorkerStats.rateLimitStoreErrors)),
            ("proxy_proxy_protocol_refusals_total", "counter",
             "Connections to a proxy_protocol listener closed for a missing, late or malformed PROXY protocol header.",
             w.sum(WorkerStats.proxyHeaderRefusals)),
        ]
        for (name, type, help, value) in scalars {
            text.family(name, type, help)
            text.sample(name, "", value)
        }
        text.family("proxy_rejections_total", "counter",
                    "Requests and connections the proxy refused itself, by reason (the status sent, or max_connections).")
        for (i, code) in WorkerStats.rejectionCodes.enumerated() {
            text.sample("proxy_rejections_total", "reason=\"\(code)\"", w.sum(WorkerStats.rejected + i))
        }
        text.sample("proxy_rejections_total", "reason=\"other\"", w.sum(WorkerStats.rejected + WorkerStats.rejectionCodes.count))
        text.sample("proxy_rejections_total", "reason=\"max_connections\"", w.sum(WorkerStats.connectionsRefused))
        text.family("proxy_policy_refusals_total", "counter",
                    "Requests a route's policy refused before contacting a backend, by reason (address: allow/deny, method, body_size).")
        for refusal in RoutePolicy.Refusal.allCases {
            text.sample("proxy_policy_refusals_total", "reason=\"\(refusal.label)\"", w.sum(WorkerStats.policyRefusals + refusal.rawValue))
        }
        // By route too (since the last reload): the route's host and path as written.
        text.family("proxy_route_policy_refusals_total", "counter",
                    "Policy refusals by route (host and path as configured; default: the top-level backends) and reason, since the last reload.")
        let reasons = RoutePolicy.Refusal.allCases.count
        let routeNames = settings.config.routes.map(\.label) + ["default"]
        for (i, name) in routeNames.enumerated() where i < settings.config.routes.count || !settings.config.backends.isEmpty {
            for refusal in RoutePolicy.Refusal.allCases {
                let n = settings.routeRefusals.sum(i * reasons + refusal.rawValue)
                if n > 0 {
                    text.sample("proxy_route_policy_refusals_total", "route=\"\(Exposition.escape(name))\",reason=\"\(refusal.label)\"", n)
                }
            }
        }

        text.family("proxy_tls_handshakes_total", "counter",
                    "TLS handshakes on the listeners, by result (ok, failed, timeout, closed by the client, plain_http sent to the TLS port).")
        for result in WorkerStats.TLSResult.allCases {
            text.sample("proxy_tls_handshakes_total", "result=\"\(result.label)\"", w.sum(WorkerStats.tlsHandshakes + result.rawValue))
        }
        text.family("proxy_tls_handshakes_by_version_total", "counter", "Completed TLS handshakes, by protocol version.")
        for (i, name) in WorkerStats.tlsVersionNames.enumerated() {
            text.sample("proxy_tls_handshakes_by_version_total", "version=\"\(name)\"", w.sum(WorkerStats.tlsVersions + i))
        }
        text.family("proxy_tls_handshakes_resumed_total", "counter", "Completed TLS handshakes, full or resumed (session ticket).")
        text.sample("proxy_tls_handshakes_resumed_total", "resumed=\"false\"", w.sum(WorkerStats.tlsResumed))
        text.sample("proxy_tls_handshakes_resumed_total", "resumed=\"true\"", w.sum(WorkerStats.tlsResumed + 1))
        text.family("proxy_tls_handshake_duration_seconds", "histogram", "Time from accepting a TLS connection to its completed handshake.")
        text.histogram("proxy_tls_handshake_duration_seconds", "",
                       RequestTotals(w, histogram: WorkerStats.tlsHandshakeDuration, sum: WorkerStats.tlsHandshakeDurationSum, withResponses: false))

        let reloads = metrics.reloadCount
        text.family("proxy_config_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.")
        text.sample("proxy_config_reloads_total", "result=\"success\"", reloads.succeeded)
        text.sample("proxy_config_reloads_total", "result=\"failure\"", reloads.failed)
        text.family("proxy_start_time_seconds", "gauge", "When the proxy started, in seconds since the Unix epoch.")
        text.sample("proxy_start_time_seconds", "", Double(metrics.startedWallMs) / 1000)
        return Array(text.out.utf8)
    }

    private static func backendLabels(_ u: Upstream, _ b: Backend) -> String {
        "upstream=\"\(Exposition.escape(u.name))\",backend=\"\(Exposition.escape(b.id))\""
    }
}

/// Writing the text exposition format.
struct Exposition {
    var out = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: String, _ value: UInt64) {
        out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
    }

    mutating func sample(_ name: String, _ labels: String, _ value: Double) {
        out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
    }

    /// Cumulative `_bucket` lines, `_sum` in seconds and `_count`.
    mutating func histogram(_ name: String, _ labels: String, _ totals: RequestTotals) {
        var cumulative: UInt64 = 0
        let bucketLabels = labels.isEmpty ? "" : labels + ","
        let own = labels.isEmpty ? "" : "{\(labels)}"
        for (i, bound) in RequestStats.boundsMicros.enumerated() {
            cumulative &+= totals.buckets[i]
            out += "\(name)_bucket{\(bucketLabels)le=\"\(Self.seconds(bound))\"} \(cumulative)\n"
        }
        cumulative &+= totals.buckets[RequestStats.bucketCount - 1]
        out += "\(name)_bucket{\(bucketLabels)le=\"+Inf\"} \(cumulative)\n"
        out += "\(name)_sum\(own) \(Double(totals.sumMicros) / 1e6)\n"
        out += "\(name)_count\(own) \(cumulative)\n"
    }

    /// Microseconds as a decimal number of seconds without exponent (`0.00025`, `1`, `60`).
    static func seconds(_ micros: UInt64) -> String {
        let whole = micros / 1_000_000
        var fraction = String(micros % 1_000_000)
        if fraction == "0" { return String(whole) }
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(whole).\(fraction)"
    }

    /// A label value: backslash, double quote and line feed escaped.
    static func escape(_ value: String) -> String {
        value.escaped { c in
            switch c {
            case "\\": "\\\\"
            case "\"": "\\\""
            case "\n": "\\n"
            default: nil
            }
        }
    }
}
