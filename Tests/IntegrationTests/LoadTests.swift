import Foundation
import Glibc
import Testing

/// Behaviour that only shows under many concurrent connections, driven by `wrk` (installed by
/// `make test`). Each run is bounded by wrk's own duration.
@Suite(.timeLimit(.minutes(2)))
struct LoadTests {

    private func wrkPath() throws -> String {
        let path = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first { FileManager.default.isExecutableFile(atPath: $0) }
        return try #require(path, "wrk is not installed: `make test` installs it (apt-get install wrk)")
    }

    private func metric(_ port: UInt16, _ name: String) throws -> Int? {
        let text = try get(port, "/_metrics").text
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Int(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    /// Over 1,024 ready events make libuv poll again inside one loop iteration; responses that
    /// arrive in that second poll once counted as "stale bytes on a pooled connection", and the
    /// GET went to the backend twice (issue 12 §1.3: 33,766 retries in 4 s). None may now.
    @Test func fifteenHundredKeepAliveClientsCauseNoRetriesOnHealthyBackends() throws {
        let wrk = try wrkPath()
        let a = try startBackend(), b = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [a.port, b.port], intervalMs: 60000), workers: 1)
        var output = ""
        let status = run("/bin/bash", ["-c", "ulimit -n 8192; exec \(wrk) -c1500 -t2 -d3s http://127.0.0.1:\(proxy.port)/"],
                         output: &output)
        #expect(status == 0, "wrk: \(output)")
        let requests = output.split(separator: "\n").first { $0.contains("requests in") }
            .flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
        print("1500 clients, 3 s: \(requests) requests; wrk said: \(output)")
        #expect(requests > 100, "wrk: \(output)")
        #expect(!output.contains("Non-2xx"), "wrk: \(output); proxy: \(proxy.log.suffix(3000)); metrics: \((try? get(proxy.port, "/_metrics").text.split(separator: "\n").filter { $0.hasPrefix("proxy_requests_total") || $0.hasPrefix("proxy_rejections_total") || $0.hasPrefix("proxy_backend_up") }.joined(separator: " | ")) ?? "")")
        #expect(try metric(proxy.port, "proxy_upstream_retries_total") == 0)
    }
}
