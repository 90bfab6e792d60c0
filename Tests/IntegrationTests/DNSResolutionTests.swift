import Foundation
import Glibc
import Testing

/// Backend host names are looked up again while the proxy runs (issue 15): through DNS servers
/// named in `"resolver"` (c-ares), every `resolve_interval_ms`. Several addresses become several
/// endpoints, changes are picked up, logged and shown in `/_health`, and a failed lookup keeps the
/// last good addresses. The DNS server is PyPI's dnslib, started here on 127.0.0.1 and rewired
/// mid-test by rewriting its records file.
@Suite(.timeLimit(.minutes(2)))
struct DNSResolutionTests {
    /// A test DNS server answering from `records` (see `Python/dns_server.py`).
    final class DNSServer {
        let records = NSTemporaryDirectory() + "proxy-dns-\(UUID().uuidString).json"
        let process: ManagedProcess

        init(names: [String: [String]]) throws {
            let python = try testPython(["dnslib": "dnslib"])
            let script = packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/dns_server.py").path
            process = try ManagedProcess(python, [script, records], absolute: true)
            set(names: names)
            // The file is re-read per query; written once before the server could be asked.
        }

        /// The answers from now on.
        func set(names: [String: [String]] = [:], mode: String = "ok") {
            let body = try! JSONSerialization.data(withJSONObject: ["ttl": 1, "mode": mode, "names": names])
            let temp = records + ".tmp"
            _ = FileManager.default.createFile(atPath: temp, contents: body)
            _ = rename(temp, records)  // atomic: the server never reads half a file
        }

        var queries: Int { ((try? String(contentsOfFile: records + ".queries", encoding: .utf8)) ?? "").split(separator: "\n").count }

        deinit { process.stop() }
    }

    /// The endpoints `/_health` lists: id → (address, healthy, dns record).
    private func endpoints(_ port: UInt16) -> [String: [String: Any]] {
        guard let r = try? get(port, "/_health"), let list = r.json["backends"] as? [[String: Any]] else { return [:] }
        var out: [String: [String: Any]] = [:]
        for b in list { if let id = b["id"] as? String { out[id] = b } }
        return out
    }

    /// The backend addresses the access log names for requests whose path starts with `prefix`.
    private func servedBy(_ log: String, prefix: String) -> [String] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  (json["target"] as? String)?.hasPrefix(prefix) == true else { return nil }
            return json["backend_address"] as? String
        }
    }

    /// Whether ::1 can be bound here (a machine or container without IPv6 has none).
    private func ipv6LoopbackUsable() -> Bool {
        let probe = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(probe) }
        var any = sockaddr_in6()
        any.sin6_family = sa_family_t(AF_INET6)
        any.sin6_addr.__in6_u.__u6_addr8.15 = 1
        return withUnsafePointer(to: &any) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
        }
    }

    @Test func aNameWithAnIPv6AddressTooIsReachedThereWhenItsIPv4OneRefuses() throws {
        // A dev server on ::1 only, behind a name with both A 127.0.0.1 and AAAA ::1 (what
        // `localhost` is on most desktops): IPv4 is tried first, refused, then ::1 answers.
        guard ipv6LoopbackUsable() else { return }
        let v6 = try ManagedProcess("test-backend", ["0", "--host", "::1"])
        defer { v6.stop() }
        let dns = try DNSServer(names: ["dual.test": ["127.0.0.1", "::1"]])
        let config = """
            {"backends":[{"id":"dev","url":"http://dual.test:\(v6.port)"}],
             "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":300,"attempts":1},
             "health_check":{"path":null,"interval_ms":60000,"timeout_ms":500,"healthy_threshold":1,"unhealthy_threshold":1}}
            """
        let proxy = try startProxy(config: config, workers: 2)
        defer { proxy.stop() }
        // The first probe found ::1 (127.0.0.1 refused): the backend is up, at its IPv6 address.
        // (Waiting for its success, not for `healthy`: a backend counts as healthy until probed.)
        #expect(eventually(3) { endpoints(proxy.port)["dev"]?["consecutive_successes"] as? Int == 1 }, "\(endpoints(proxy.port))")
        #expect(endpoints(proxy.port)["dev"]?["healthy"] as? Bool == true, "\(endpoints(proxy.port))")
        #expect(endpoints(proxy.port)["dev"]?["address"] as? String == "[::1]:\(v6.port)", "\(endpoints(proxy.port))")
        for i in 0..<6 { #expect(try get(proxy.port, "/r\(i)").status == 200) }

        // No probe in time: a dev server that starts on ::1 after the start probe found nothing.
        // The request's connect to 127.0.0.1 is refused, the backend moves to ::1 and the request
        // goes there (try_when_all_down lets it try although the probe said down).
        let late = try ManagedProcess("test-backend", ["0", "--host", "::1"])
        let latePort = late.port
        late.stop()  // the port is free again: the server comes back there below
        let idle = try startProxy(config: """
            {"backends":[{"id":"dev","url":"http://dual.test:\(latePort)"}], "try_when_all_down": true,
             "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":300,"attempts":1},
             "health_check":{"path":null,"interval_ms":60000,"timeout_ms":500,"healthy_threshold":1,"unhealthy_threshold":1}}
            """, workers: 1)
        defer { idle.stop() }
        #expect(eventually(3) { endpoints(idle.port)["dev"]?["healthy"] as? Bool == false })
        let back = try ManagedProcess("test-backend", [String(latePort), "--host", "::1"])
        defer { back.stop() }
        #expect(try get(idle.port, "/late").status == 200)
        #expect(endpoints(idle.port)["dev"]?["address"] as? String == "[::1]:\(latePort)", "\(endpoints(idle.port))")
    }

    /// A listener on 127.0.0.1:`port` that completes no further handshake: backlog 0 and one
    /// connection already queued, so Linux drops the SYNs that follow — an address that neither
    /// answers nor refuses, like an IPv6 route that leads nowhere. Returns the descriptors to close.
    private func silentListener(port: UInt16) -> [Int32]? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) == 0 } }
        guard ok, listen(fd, 0) == 0 else { close(fd); return nil }
        let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, size) } }
        return [fd, filler]
    }

    @Test func anAddressThatDropsConnectsIsRacedByTheNextOneAfterTheAttemptDelay() throws {
        // Happy eyeballs (RFC 8305): the name's first address swallows SYNs; the second (::1)
        // serves. Neither a probe nor a request waits for its whole timeout on the first: the
        // next address is tried alongside after 250 ms and the first to connect wins.
        guard ipv6LoopbackUsable() else { return }
        let first = try ManagedProcess("test-backend", ["0", "--host", "::1"])
        let port = first.port
        first.stop()  // its port comes back below, on ::1, after the IPv4 side is silenced
        guard let silent = silentListener(port: port) else { Issue.record("cannot bind 127.0.0.1:\(port)"); return }
        defer { for fd in silent { close(fd) } }
        let dns = try DNSServer(names: ["dual.test": ["127.0.0.1", "::1"]])
        func config(probeTimeoutMs: Int) -> String {
            """
            {"backends":[{"id":"dev","url":"http://dual.test:\(port)"}], "try_when_all_down": true,
             "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":300,"attempts":1},
             "timeouts":{"connect_ms":5000},
             "health_check":{"path":null,"interval_ms":60000,"timeout_ms":\(probeTimeoutMs),"healthy_threshold":1,"unhealthy_threshold":1}}
            """
        }

        // Nothing on ::1 yet: the start probe finds no address (127.0.0.1 silent, ::1 refused)
        // and the backend's current address stays 127.0.0.1.
        let proxy = try startProxy(config: config(probeTimeoutMs: 800), workers: 1)
        defer { proxy.stop() }
        #expect(eventually(3) { endpoints(proxy.port)["dev"]?["healthy"] as? Bool == false }, "\(endpoints(proxy.port))")
        #expect(endpoints(proxy.port)["dev"]?["address"] as? String == "127.0.0.1:\(port)", "\(endpoints(proxy.port))")
        let server = try ManagedProcess("test-backend", [String(port), "--host", "::1"])
        defer { server.stop() }
        // A request (try_when_all_down) connects to 127.0.0.1, which stays silent; ::1 joins
        // after 250 ms and carries it, well before connect_ms (5 s).
        let started = Date()
        #expect(try get(proxy.port, "/raced").status == 200)
        let took = Date().timeIntervalSince(started)
        #expect(took >= 0.2 && took < 2.5, "took \(took) s: the second address should join after 250 ms, not after connect_ms")
        #expect(endpoints(proxy.port)["dev"]?["address"] as? String == "[::1]:\(port)", "\(endpoints(proxy.port))")
        #expect(try get(proxy.port, "/next").status == 200)

        // A probe races the same way: healthy long before its 10 s timeout could end at 127.0.0.1.
        let probed = try startProxy(config: config(probeTimeoutMs: 10000), workers: 1)
        defer { probed.stop() }
        #expect(eventually(3) { endpoints(probed.port)["dev"]?["consecutive_successes"] as? Int == 1 }, "\(endpoints(probed.port))")
        #expect(endpoints(probed.port)["dev"]?["address"] as? String == "[::1]:\(port)", "\(endpoints(probed.port))")
    }

    @Test func namesAreResolvedAgainAndSeveralAddressesBecomeSeveralEndpoints() throws {
        // Two backends on the same port of two loopback addresses: what one name can point at.
        let a = try ManagedProcess("test-backend", ["0", "--host", "127.0.0.1"])
        let b = try ManagedProcess("test-backend", [String(a.port), "--host", "127.0.0.2"])
        let port = a.port
        let dns = try DNSServer(names: ["app.test": ["127.0.0.1"]])
        let log = NSTemporaryDirectory() + "proxy-dns-log-\(UUID().uuidString).json"
        let config = """
            {"backends":[{"id":"app","url":"http://app.test:\(port)"}],
             "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":300,"attempts":1},
             "resolve_interval_ms":200,
             "health_check":{"path":"/health","interval_ms":100,"timeout_ms":500,"healthy_threshold":1,"unhealthy_threshold":1},
             "access_log":{"path":"\(log)","format":"json","flush_ms":20}}
            """
        let proxy = try startProxy(config: config)
        defer { proxy.stop(); a.stop(); b.stop() }

        // One address: one endpoint named as the backend, its record in /_health.
        var list = endpoints(proxy.port)
        #expect(Array(list.keys) == ["app"], "\(list)")
        let dnsRecord = list["app"]?["dns"] as? [String: Any]
        #expect(dnsRecord?["host"] as? String == "app.test")
        #expect(dnsRecord?["addresses"] as? [String] == ["127.0.0.1"])
        #expect(try get(proxy.port, "/one").status == 200)

        // A weight set at runtime stays through the change below (it is not a reload).
        #expect(try TestConnection(port: proxy.port).request("PUT", "/_admin/backends/app/weight/5").status == 200)

        // The name gains an address: two endpoints, both probed healthy, both used.
        dns.set(names: ["app.test": ["127.0.0.2", "127.0.0.1"]])
        #expect(eventually(10) {
            let l = endpoints(proxy.port)
            return Set(l.keys) == ["app@127.0.0.1", "app@127.0.0.2"] && l.values.allSatisfy { $0["healthy"] as? Bool == true }
        }, "\(endpoints(proxy.port)) \(proxy.log)")
        // (The log is read by another thread: the line may lag the change it reports.)
        #expect(eventually(5) { proxy.log.contains("dns: generation 2: backend app (app.test): 127.0.0.1 -> 127.0.0.1, 127.0.0.2") }, "\(proxy.log)")
        for i in 0..<20 { #expect(try get(proxy.port, "/two/\(i)").status == 200) }
        #expect(eventually { servedBy(log, prefix: "/two/").count == 20 })
        #expect(Set(servedBy(log, prefix: "/two/")) == ["127.0.0.1:\(port)", "127.0.0.2:\(port)"], "round-robin over both endpoints")
        list = endpoints(proxy.port)
        #expect((list["app@127.0.0.2"]?["dns"] as? [String: Any])?["addresses"] as? [String] == ["127.0.0.1", "127.0.0.2"])
        #expect((list["app@127.0.0.1"]?["backend"] as? String) == "app")
        #expect(list.values.allSatisfy { $0["weight"] as? Int == 5 }, "\(list)")

        // The runtime API takes the backend's id for all its endpoints.
        let drain = try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app/drain")
        #expect(drain.status == 200, "\(drain.text)")
        #expect(endpoints(proxy.port).values.allSatisfy { $0["state"] as? String == "draining" })
        #expect(try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app@127.0.0.1/enable").status == 200)
        #expect(endpoints(proxy.port)["app@127.0.0.1"]?["state"] as? String == "enabled")
        #expect(endpoints(proxy.port)["app@127.0.0.2"]?["state"] as? String == "draining")
        #expect(try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app/enable").status == 200)

        // The first address goes away: its endpoint leaves, the other one stays.
        dns.set(names: ["app.test": ["127.0.0.2"]])
        #expect(eventually(10) { Array(endpoints(proxy.port).keys) == ["app"] && endpoints(proxy.port)["app"]?["address"] as? String == "127.0.0.2:\(port)" },
                "\(endpoints(proxy.port)) \(proxy.log)")
        // An endpoint's ID@ADDRESS name works also while it is the only one (named "app").
        #expect(try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app@127.0.0.2/drain").status == 200)
        #expect(endpoints(proxy.port)["app"]?["state"] as? String == "draining")
        #expect(try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app@127.0.0.2/enable").status == 200)
        #expect(try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app@127.0.0.9/enable").status == 404)
        for i in 0..<6 { #expect(try get(proxy.port, "/three/\(i)").status == 200) }
        #expect(eventually { servedBy(log, prefix: "/three/").count == 6 })
        #expect(Set(servedBy(log, prefix: "/three/")) == ["127.0.0.2:\(port)"])

        // The DNS server fails: the last good address stays in use, the failure is shown.
        dns.set(mode: "servfail")
        #expect(eventually(10) { ((endpoints(proxy.port)["app"]?["dns"] as? [String: Any])?["last_error"] as? String) != nil },
                "\(endpoints(proxy.port))")
        // The log is read by another thread: the line may land a moment after /_health shows it.
        #expect(eventually(3) { proxy.log.contains("dns: backend app: ") && proxy.log.contains("keeping 127.0.0.2") }, "\(proxy.log)")
        #expect(try get(proxy.port, "/four").status == 200)
        #expect(endpoints(proxy.port)["app"]?["address"] as? String == "127.0.0.2:\(port)")

        // It answers again: the error clears.
        dns.set(names: ["app.test": ["127.0.0.2"]])
        #expect(eventually(10) {
            let r = endpoints(proxy.port)["app"]?["dns"] as? [String: Any]
            return r != nil && r?["last_error"] is NSNull && (r?["failed_lookups"] as? Int ?? 0) > 0
        }, "\(endpoints(proxy.port))")

        // A reload starts runtime changes over, also for addresses the name gains afterwards.
        #expect(try TestConnection(port: proxy.port).request("POST", "/_admin/backends/app/drain").status == 200)
        proxy.signal(SIGHUP)
        #expect(eventually(10) { proxy.log.contains("reload: ") && endpoints(proxy.port)["app"]?["state"] as? String == "enabled" },
                "\(proxy.log)")
        dns.set(names: ["app.test": ["127.0.0.1", "127.0.0.2"]])
        #expect(eventually(10) { endpoints(proxy.port).count == 2 }, "\(endpoints(proxy.port))")
        #expect(endpoints(proxy.port).values.allSatisfy { $0["state"] as? String == "enabled" && $0["weight"] as? Int == 1 },
                "\(endpoints(proxy.port))")
    }

    @Test func aSilentDNSServerDoesNotHoldUpTheShutdown() throws {
        let a = try startBackend()
        let dns = try DNSServer(names: ["app.test": ["127.0.0.1"]])
        let proxy = try startProxy(config: """
            {"backends":[{"id":"app","url":"http://app.test:\(a.port)"}],
             "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":3000,"attempts":2},
             "resolve_interval_ms":100, "shutdown_grace_ms":1000}
            """)
        defer { proxy.stop(); a.stop() }
        #expect(try get(proxy.port, "/").status == 200)
        dns.set(mode: "silent")
        let asked = dns.queries
        #expect(eventually { dns.queries > asked }, "a lookup is under way, waiting for an answer that never comes")
        let start = Date()
        proxy.signal(SIGTERM)
        let status = proxy.waitForExit(seconds: 10)
        let took = Date().timeIntervalSince(start)
        #expect(status == 0, "\(proxy.log)")
        // Before: the loop waited out the lookup (3 s × 2 tries).
        #expect(took < 3, "exited \(took) s after SIGTERM")
    }

    @Test func aReloadThatFixesTheResolverDoesNotWaitForTheStuckOne() throws {
        let a = try startBackend()
        let silent = try DNSServer(names: ["app.test": ["127.0.0.1"]])
        let good = try DNSServer(names: ["app.test": ["127.0.0.1"], "new.test": ["127.0.0.1"]])
        func config(_ dns: DNSServer, _ names: [String]) -> String {
            let list = names.enumerated().map { "{\"id\":\"b\($0.offset)\",\"url\":\"http://\($0.element):\(a.port)\"}" }
            return """
                {"backends":[\(list.joined(separator: ","))],
                 "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":3000,"attempts":2}}
                """
        }
        let path = writeTempFile(config(silent, ["app.test"]), suffix: ".json")
        let proxy = try ManagedProcess("proxy", ["--config", path, "--listen", "127.0.0.1:0", "--workers", "2"])
        defer { proxy.stop(); a.stop() }
        // A reload whose new name waits on a server that never answers…
        silent.set(mode: "silent")
        try config(silent, ["app.test", "new.test"]).write(toFile: path, atomically: false, encoding: .utf8)
        let asked = silent.queries
        proxy.signal(SIGHUP)
        #expect(eventually { silent.queries > asked })
        // …and the file fixed to a working server: applied at once, not after 3 s × 2 tries.
        try config(good, ["app.test", "new.test"]).write(toFile: path, atomically: false, encoding: .utf8)
        let start = Date()
        proxy.signal(SIGHUP)
        #expect(eventually(10) { proxy.log.contains("generation 2: ") }, "\(proxy.log)")
        #expect(Date().timeIntervalSince(start) < 2.5, "applied \(Date().timeIntervalSince(start)) s after the second SIGHUP")
        #expect(proxy.log.contains("dropping its lookups"), "\(proxy.log)")
        #expect(!proxy.log.contains("generation 3"), "the stuck reload's answer never applies: \(proxy.log)")
    }

    @Test func aNameTheResolverDoesNotKnowStopsTheStartNamingIt() throws {
        let dns = try DNSServer(names: ["app.test": ["127.0.0.1"]])
        let file = writeTempFile("""
            {"backends":[{"id":"api","url":"http://nowhere.test:80"}],
             "resolver":{"servers":["127.0.0.1:\(dns.process.port)"],"timeout_ms":300,"attempts":1}}
            """, suffix: ".json")
        var text = ""
        let status = run(productsDirectory.appendingPathComponent("proxy").path, ["--config", file, "--listen", "127.0.0.1:0"], output: &text)
        #expect(status != 0)
        #expect(text.contains("nowhere.test") && text.contains("resolver 127.0.0.1:\(dns.process.port)"), "\(text)")
        #expect(dns.queries > 0, "the configured server was asked")
    }
}
