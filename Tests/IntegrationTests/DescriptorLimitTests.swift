import Foundation
import Glibc
import Testing

/// The proxy under a low file-descriptor limit (issue 12 §1.11, §1.12), started through
/// `prlimit` with equal soft and hard limits so it cannot raise them.
@Suite(.timeLimit(.minutes(2)))
struct DescriptorLimitTests {

    /// §1.11: with `max_connections` left out, it is derived from the limit, so a surge of
    /// clients cannot take the descriptors the upstream connections need: the excess waits in
    /// the listen queue and every request is answered by the backend.
    @Test func aSurgeBeyondTheDescriptorLimitWaitsAndEveryRequestGetsA200() throws {
        let backend = try startBackend()
        let config = writeTempFile(proxyConfig(backends: [backend.port]), suffix: ".json")
        let proxy = try proxyUnderLimit(256, config: config)
        defer { proxy.stop() }
        let clients = 400
        let results = Results()
        let started = Date()
        let group = DispatchGroup()
        for i in 0..<clients {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    // Keep-alive requests: each client holds its connection until it has its answer.
                    let c = try TestConnection(port: proxy.port, timeoutSeconds: 20)
                    let r = try c.request("GET", "/surge/\(i)")
                    let ok = r.status == 200 && r.json["backend"] as? String == "backend-\(backend.port)"
                    // Anything else is kept with the first line of its body: the proxy's reason.
                    let reason = String(decoding: r.body.prefix(160), as: UTF8.self).split(separator: "\n").first ?? ""
                    results.add(ok ? "200" : "\(r.status) \(reason)")
                } catch {
                    results.add("no answer")
                }
            }.start()
        }
        let finished = group.wait(timeout: .now() + 40) == .success
        let elapsed = Date().timeIntervalSince(started)
        let counts = results.counts
        #expect(finished, "every client finished within 40 s: \(counts)")
        #expect(counts["200"] == clients, "answers: \(counts) in \(elapsed) s; the proxy's log ends: \(proxy.log.suffix(1500))")
        #expect(elapsed < 30)
        #expect(!proxy.log.contains("EMFILE"), "the proxy never ran out of descriptors")
        #expect(proxy.log.contains("fd limit 256, max connections "), "the start line shows the derived limit")
        #expect(proxy.process.isRunning)
    }

    /// §1.12: health probes that fail because the proxy itself is out of descriptors give no
    /// verdict: the backend is not marked down, and it serves as soon as the pressure ends.
    @Test func probesFailingForWantOfDescriptorsDoNotMarkBackendsDown() throws {
        let backend = try startBackend()
        // An explicit max_connections far above what 64 descriptors allow, so clients can use
        // them all up; probes every 100 ms, down after one failure, up only after three successes.
        let config = writeTempFile(proxyConfig(backends: [backend.port], intervalMs: 100, healthy: 3, unhealthy: 1,
                                               extra: ",\"limits\":{\"max_connections\":10000}"), suffix: ".json")
        let proxy = try proxyUnderLimit(64, config: config)
        defer { proxy.stop() }
        #expect(backendStates(proxy.port) == ["b1": true])
        #expect(proxy.log.contains("limits.max_connections 10000 is more than the file-descriptor limit 64 allows"),
                "a warning at start")
        var held: [TestConnection] = []
        for _ in 0..<100 { if let c = try? TestConnection(port: proxy.port, timeoutSeconds: 2) { held.append(c) } }
        // Keep every descriptor taken (more clients fill any one that frees up, such as a paused
        // listener's) until probes have hit EMFILE, then for ten more probe rounds.
        let skipped = eventually(5) {
            if let c = try? TestConnection(port: proxy.port, timeoutSeconds: 1) { held.append(c) }
            return proxy.log.contains("skipped: connect: the proxy is out of file descriptors")
        }
        #expect(skipped, "probes met EMFILE and were skipped")
        for _ in 0..<10 {
            if let c = try? TestConnection(port: proxy.port, timeoutSeconds: 1) { held.append(c) }
            usleep(100_000)
        }
        held.removeAll()
        // As soon as the clients are gone, the backend serves: no 503, no three-probe wait.
        var first: HTTPResponse?
        #expect(eventually(2) {
            first = try? TestConnection(port: proxy.port, timeoutSeconds: 2).request("GET", "/after")
            return first != nil
        })
        #expect(first?.status == 200, "first answer after the pressure: \(first?.status ?? 0) \(first?.text ?? "")")
        // (A connection may still be shed while the proxy works through the dead ones queued.)
        var states: [String: Bool] = [:]
        #expect(eventually(2) { states = backendStates(proxy.port); return !states.isEmpty })
        #expect(states == ["b1": true])
        let log = proxy.log.split(separator: "\n").filter { !$0.contains("\"GET ") }.joined(separator: "\n")
        #expect(!log.contains("is down"), "\(log)")
    }
}

extension DescriptorLimitTests {
    /// `--check` states the limit in force and warns about an explicit one beyond the fd limit.
    @Test func checkShowsTheDerivedLimitAndWarnsAboutOneTooHigh() throws {
        let proxy = productsDirectory.appendingPathComponent("proxy").path
        func check(_ json: String) -> String {
            var output = ""
            run("/usr/bin/prlimit", ["--nofile=256:256", proxy, "--check", "--workers", "2",
                                     "--config", writeTempFile(json, suffix: ".json")], output: &output)
            return output
        }
        let derived = check(#"{"backends":[{"url":"http://127.0.0.1:1"}]}"#)
        #expect(derived.contains("max_connections: 103 (derived from the fd limit 256)"), "\(derived)")
        #expect(!derived.contains("warn"))
        let tooHigh = check(#"{"backends":[{"url":"http://127.0.0.1:1"}],"limits":{"max_connections":5000}}"#)
        #expect(tooHigh.contains("max_connections: 5000 (configured; fd limit 256)"), "\(tooHigh)")
        #expect(tooHigh.contains("limits.max_connections 5000 is more than the file-descriptor limit 256 allows (103"), "\(tooHigh)")
    }
}

/// The proxy (2 workers) with soft and hard descriptor limits of `limit`.
private func proxyUnderLimit(_ limit: Int, config: String) throws -> ManagedProcess {
    try ManagedProcess("/usr/bin/prlimit", ["--nofile=\(limit):\(limit)", productsDirectory.appendingPathComponent("proxy").path,
                                            "--config", config, "--listen", "127.0.0.1:0", "--workers", "2"], absolute: true)
}

private final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: Int] = [:]
    func add(_ key: String) { lock.lock(); values[key, default: 0] += 1; lock.unlock() }
    var counts: [String: Int] { lock.lock(); defer { lock.unlock() }; return values }
}
