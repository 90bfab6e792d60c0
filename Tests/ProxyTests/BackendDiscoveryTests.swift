import Foundation
import Testing
@testable import Proxy

/// Host names as endpoints (issue 15): which addresses of an answer are used, how endpoints are
/// named and kept across re-resolutions, when the next lookup is due, and the `"resolver"` and
/// `"resolve_interval_ms"` settings. No sockets: the lookups themselves are in
/// `DNSResolutionTests` (a real DNS server).
struct BackendDiscoveryTests {
    private func address(_ ip: String, _ port: UInt16 = 8080) -> SocketAddress { SocketAddress(ip: ip, port: port)! }

    @Test func theIPv4AddressesOfAnAnswerAreUsedElseTheIPv6OnesWithoutRepeats() {
        let mixed = ResolvedAddresses(choosingFrom: [(address("::1"), ttlS: 5), (address("10.0.0.2"), ttlS: 30),
                                                     (address("10.0.0.1"), ttlS: 10), (address("10.0.0.2"), ttlS: 30)])
        #expect(mixed.addresses.map(\.ipString) == ["10.0.0.2", "10.0.0.1"])
        #expect(mixed.ttlS == 10, "the shortest TTL of the records used (not the unused IPv6 one)")
        let v6 = ResolvedAddresses(choosingFrom: [(address("fd00::2"), ttlS: nil), (address("fd00::1"), ttlS: nil)])
        #expect(v6.addresses.map(\.ipString) == ["fd00::2", "fd00::1"])
        #expect(v6.ttlS == nil)
        #expect(ResolvedAddresses(choosingFrom: []).addresses.isEmpty)
        #expect(mixed.otherFamily.map(\.ipString) == ["::1"], "kept as fallbacks")
        #expect(v6.otherFamily.isEmpty)
    }

    @Test func aNameWithOneAddressGetsTheOtherFamilyAsFallbacksAndMovesOnWhenOneFails() {
        guard address("::1").isRoutableHere else { return }  // no IPv6 here: no fallback is kept
        let config = BackendConfig(id: "dev", url: "http://localhost:5173", host: "localhost", port: 5173)
        let one = BackendEndpoints.make(config, addresses: [address("127.0.0.1")], current: [], workers: 1, tls: nil, record: nil,
                                        otherFamily: [address("::1")])
        #expect(one.count == 1 && one[0].fallbacks == [address("::1")] && one[0].currentAddress == address("127.0.0.1"))
        one[0].addressFailed(0)
        #expect(one[0].currentAddress == address("::1"))
        one[0].addressFailed(0)
        #expect(one[0].currentAddress == address("::1"), "a stale failure report (another worker's) does not move it back")
        one[0].addressFailed(1)
        #expect(one[0].currentAddress == address("127.0.0.1"), "round: the next after the last is the first")
        one[0].addressAnswered(1)
        #expect(one[0].answeringIndex == 1)
        // Several preferred addresses are several endpoints, without fallbacks.
        let two = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.2")], current: [], workers: 1, tls: nil,
                                        record: nil, otherFamily: [address("::1")])
        #expect(two.count == 2 && two.allSatisfy { $0.fallbacks.isEmpty })
    }

    @Test func socketAddressesCompareByFamilyAddressAndPort() {
        #expect(address("10.0.0.1") == address("10.0.0.1"))
        #expect(address("10.0.0.1") != address("10.0.0.2"))
        #expect(address("10.0.0.1", 1) != address("10.0.0.1", 2))
        #expect(address("::1") == address("::1"))
        #expect(address("::1") != address("::2"))
        #expect(address("::ffff:10.0.0.1") != address("10.0.0.1"))
    }

    @Test func oneAddressIsOneEndpointNamedAsTheBackendSeveralAreNamedByAddress() {
        let config = BackendConfig(id: "api", url: "http://api.internal:8080", host: "api.internal", port: 8080)
        let record = BackendNameRecord(host: "api.internal", addresses: [address("10.0.0.1")])
        let one = BackendEndpoints.make(config, addresses: [address("10.0.0.1")], current: [], workers: 1, tls: nil, record: record)
        #expect(one.map(\.id) == ["api"])
        #expect(one[0].backendID == "api")
        #expect(one[0].balancingName == "http://api.internal:8080", "one address: named as an IP literal backend is")

        let two = BackendEndpoints.make(config, addresses: [address("10.0.0.10"), address("10.0.0.9")], current: one, workers: 1,
                                        tls: nil, record: record)
        #expect(two.map(\.id) == ["api@10.0.0.9", "api@10.0.0.10"], "in address order, numerically")
        #expect(two.map(\.balancingName) == ["http://api.internal:8080@10.0.0.9", "http://api.internal:8080@10.0.0.10"])
        #expect(two.allSatisfy { $0.backendID == "api" && $0.nameRecord === record })

        // A re-resolution that keeps an address keeps its endpoint (pool, health, counters).
        let three = BackendEndpoints.make(config, addresses: [address("10.0.0.9"), address("10.0.0.10"), address("10.0.0.11")],
                                          current: two, workers: 1, tls: nil, record: record)
        #expect(three[0] === two[0] && three[1] === two[1])
        #expect(three[2].id == "api@10.0.0.11")
        #expect(BackendEndpoints.same(three, [address("10.0.0.11"), address("10.0.0.9"), address("10.0.0.10")]))
        #expect(!BackendEndpoints.same(three, [address("10.0.0.9"), address("10.0.0.10")]))

        // An IP literal: the URL is the balancing name (as before host names were endpoints).
        let literal = BackendConfig(id: "b1", url: "http://10.0.0.5:80", host: "10.0.0.5", port: 80)
        let made = BackendEndpoints.make(literal, addresses: [address("10.0.0.5", 80)], current: [], workers: 1, tls: nil, record: nil)
        #expect(made.map(\.id) == ["b1"] && made[0].balancingName == "http://10.0.0.5:80")
    }

    @Test func anEndpointThatIsDownStaysDownWhenItIsRenamed() {
        let config = BackendConfig(id: "api", url: "http://api.internal:8080", host: "api.internal", port: 8080)
        let record = BackendNameRecord(host: "api.internal", addresses: [address("10.0.0.1")])
        let one = BackendEndpoints.make(config, addresses: [address("10.0.0.1")], current: [], workers: 1, tls: nil, record: record)
        _ = one[0].recordProbe(ok: false, problem: "refused", healthyThreshold: 1, unhealthyThreshold: 1)
        #expect(!one[0].isHealthy)
        let two = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.2")], current: one, workers: 1,
                                        tls: nil, record: record)
        #expect(two[0] !== one[0] && two[0].id == "api@10.0.0.1")
        #expect(!two[0].isHealthy, "the verdict at that address carries over to its new name")
        #expect(two[1].isHealthy)
    }

    @Test func aReResolutionKeepsTheRuntimeAPIsStateAndWeightAReloadDoesNot() {
        let config = BackendConfig(id: "api", url: "http://api.internal:8080", host: "api.internal", port: 8080)
        let record = BackendNameRecord(host: "api.internal", addresses: [address("10.0.0.1")])
        let one = BackendEndpoints.make(config, addresses: [address("10.0.0.1")], current: [], workers: 1, tls: nil, record: record)
        // What the runtime API does for `…/backends/api/…` (the backend's id).
        one[0].setAdminState(.draining)
        one[0].setWeight(7)
        record.setBackendRuntimeChanges(state: .draining, weight: 7)
        let two = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.2")], current: one, workers: 1,
                                        tls: nil, record: record, keepingRuntimeChanges: true)
        #expect(two.allSatisfy { $0.adminState == .draining && $0.effectiveWeight == 7 })
        let reloaded = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.2")], current: one, workers: 1,
                                             tls: nil, record: record)
        #expect(reloaded.allSatisfy { $0.adminState == .enabled && $0.effectiveWeight == 1 })
    }

    @Test func manyAddressesAreCappedInAddressOrderNotAnswerOrder() {
        let all = (0..<300).map { (address("10.0.\($0 / 250).\($0 % 250)"), ttlS: Int?.none) }
        let a = ResolvedAddresses(choosingFrom: all)
        let b = ResolvedAddresses(choosingFrom: all.reversed())
        #expect(a.addresses.count == ResolvedAddresses.maxAddresses && a.truncatedFrom == 300)
        #expect(a.addresses == b.addresses, "a rotated answer picks the same endpoints")
        #expect(a.addresses.first?.ipString == "10.0.0.0" && a.addresses.last?.ipString == "10.0.1.5")
        #expect(ResolvedAddresses(choosingFrom: Array(all.prefix(3)), found: 2000).truncatedFrom == 2000)
    }

    @Test func theBackendsRuntimeStateGoesToNewAddressesAnEndpointsOwnStaysWithIt() {
        let config = BackendConfig(id: "api", url: "http://api.internal:8080", host: "api.internal", port: 8080)
        let record = BackendNameRecord(host: "api.internal", addresses: [])
        let two = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.2")], current: [], workers: 1,
                                        tls: nil, record: record)
        two[0].setAdminState(.disabled)  // one endpoint, by its name
        let three = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.2"), address("10.0.0.3")],
                                          current: two, workers: 1, tls: nil, record: record, keepingRuntimeChanges: true)
        #expect(three.map(\.adminState) == [.disabled, .enabled, .enabled])
        record.setBackendRuntimeChanges(state: .draining, weight: 4)  // the backend, by its id
        let four = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.4")],
                                         current: three, workers: 1, tls: nil, record: record, keepingRuntimeChanges: true)
        #expect(four.map(\.adminState) == [.disabled, .draining] && four[1].effectiveWeight == 4)
        // A reload starts the backend's runtime state over (as the endpoints'): a later address is enabled.
        record.resetBackendRuntimeChanges()
        let five = BackendEndpoints.make(config, addresses: [address("10.0.0.1"), address("10.0.0.5")],
                                         current: four, workers: 1, tls: nil, record: record, keepingRuntimeChanges: true)
        #expect(five[1].adminState == .enabled && five[1].effectiveWeight == 1)
    }

    @Test func theRecordCountsLookupsChangesAndFailures() {
        let record = BackendNameRecord(host: "api.internal", addresses: [address("10.0.0.2"), address("10.0.0.1")])
        #expect(record.snapshot.addresses == ["10.0.0.1", "10.0.0.2"])
        #expect(record.noteFailure("SERVFAIL"), "the first failure of a run is logged")
        #expect(!record.noteFailure("SERVFAIL"), "the next ones are only counted")
        #expect(record.snapshot.lastError == "SERVFAIL" && record.snapshot.failedLookups == 2)
        record.noteLookup(changedTo: nil)
        #expect(record.snapshot.lastError == nil && record.snapshot.changes == 0 && record.snapshot.lookups == 4)
        record.noteLookup(changedTo: [address("10.0.0.3")])
        #expect(record.snapshot.addresses == ["10.0.0.3"] && record.snapshot.changes == 1)
        #expect(record.noteFailure("timeout"), "a new run after a success")
    }

    @Test func theNextLookupIsDueAfterTheIntervalOrAShorterTTL() {
        let ms: UInt64 = 1_000_000
        #expect(BackendDiscovery.delayNs(intervalMs: 30_000, ttlS: nil, failed: false) == 30_000 * ms)
        #expect(BackendDiscovery.delayNs(intervalMs: 30_000, ttlS: 5, failed: false) == 5_000 * ms)
        #expect(BackendDiscovery.delayNs(intervalMs: 30_000, ttlS: 0, failed: false) == 1_000 * ms, "a TTL of 0 cannot make a busy loop")
        #expect(BackendDiscovery.delayNs(intervalMs: 30_000, ttlS: 300, failed: false) == 30_000 * ms, "a longer TTL does not delay")
        #expect(BackendDiscovery.delayNs(intervalMs: 30_000, ttlS: nil, failed: true) == 5_000 * ms, "failures are retried sooner")
        #expect(BackendDiscovery.delayNs(intervalMs: 200, ttlS: 1, failed: true) == 200 * ms)
        #expect(BackendDiscovery.delayNs(intervalMs: 200, ttlS: 0, failed: false) == 200 * ms, "never past the interval")
        #expect(BackendDiscovery.delayNs(intervalMs: 2500, ttlS: 2, failed: false) == 2000 * ms)
    }

    @Test func theResolverAndTheIntervalAreConfiguredAndChecked() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://api.internal:80"}], "resolve_interval_ms": 5000,
             "resolver": {"servers": ["127.0.0.1", "10.0.0.53:5353", "::1", "[fd00::53]:53"], "timeout_ms": 500}}
            """#.utf8), file: "config.json")
        #expect(config.allUpstreams[0].balance.resolveIntervalMs == 5000)
        #expect(config.resolver?.serverList == "127.0.0.1:53,10.0.0.53:5353,[::1]:53,[fd00::53]:53")
        #expect(config.resolver?.timeoutMs == 500 && config.resolver?.attempts == 2)
        #expect(try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}]}"#.utf8), file: "c.json").resolver == nil)
        #expect(try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}]}"#.utf8), file: "c.json")
            .allUpstreams[0].balance.resolveIntervalMs == 30_000)
        for (json, expected) in [
            (#"{"resolver": {"servers": ["dns.google"]}}"#, "resolver.servers[0]: expected an IP address"),
            (#"{"resolver": {"servers": ["127.0.0.1:99999"]}}"#, "the port must be a number from 1 to 65535"),
            (#"{"resolver": {"servers": ["127.0.0.1:"]}}"#, "the port must be a number from 1 to 65535"),
            (#"{"resolver": {"servers": ["dns.google:53"]}}"#, "cannot be a host name"),
            (#"{"resolver": {"servers": ["[::1]:0"]}}"#, "the port must be a number from 1 to 65535"),
            (#"{"resolver": {"servers": []}}"#, "resolver.servers: the list is empty"),
            (#"{"resolver": {"timeout_ms": 100}}"#, "resolver.servers: missing"),
            (#"{"resolver": {"servers": ["127.0.0.1"], "attempts": 0}}"#, "resolver.attempts: must be at least 1"),
            (#"{"resolve_interval_ms": -1}"#, "resolve_interval_ms: must be at least 0"),
            (#"{"resolve_interval_ms": 50}"#, "resolve_interval_ms: must be 0 (no re-resolution) or at least 100"),
            (#"{"backends": [{"id": "api@1", "url": "http://a:1"}]}"#, "backends[0].id: must not contain '@'"),
            (#"{"resolver": {"servers": ["127.0.0.1"], "timeout_ms": 60000}}"#, "resolver.timeout_ms: must be at most 10000"),
        ] {
            do {
                _ = try ConfigLoader.parse(Array(json.utf8), file: "config.json")
                Issue.record("loaded \(json)")
            } catch {
                #expect(error.description.contains(expected), "\(error)")
            }
        }
    }
}
