import Testing
@testable import Proxy

struct BalancerTests {
    private func backends(_ n: Int) -> [Backend] {
        (0..<n).map { i in
            Backend(shared: sharedBackend(port: UInt16(9000 + i)), worker: 0, pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000))
        }
    }

    /// The first probe decides at once: one failure takes a backend down.
    private func takeDown(_ b: Backend) {
        _ = b.shared.recordProbe(ok: false, problem: "test", healthyThreshold: 1, unhealthyThreshold: 1)
    }

    /// The balancer's hooks: a pick counts in flight on its backend until `finished`, and
    /// verdicts the active checks change reach it (through the worker's sweep).
    @Test func theBalancerHearsWhatBecameOfEachPickAndOfEachVerdict() {
        let list = backends(3)
        let upstream = Upstream(shared: SharedUpstream(name: "u", workers: 1), worker: 0, backends: list)
        let first = upstream.balancer.pick(from: list, excluding: AttemptSet())!
        upstream.balancer.started(first, of: list)
        let second = upstream.balancer.pick(from: list, excluding: AttemptSet())!
        upstream.balancer.started(second, of: list)
        #expect(first != second)
        #expect(list[first].activeRequests == 1 && list[second].activeRequests == 1)
        upstream.balancer.finished(first, of: list, outcome: .response(status: 200), headMicros: 120)
        upstream.balancer.finished(second, of: list, outcome: .connectFailure, headMicros: nil)
        #expect(list.allSatisfy { $0.activeRequests == 0 })
        #expect(upstream.noticeHealthChanges().isEmpty)
        takeDown(list[1])
        #expect(upstream.noticeHealthChanges() == [1])
        #expect(upstream.noticeHealthChanges().isEmpty, "told once")
        var tried = AttemptSet()
        for _ in 0..<4 { if let i = upstream.balancer.pick(from: list, excluding: AttemptSet()) { tried.insert(i) } }
        #expect(!tried.contains(1), "an unhealthy backend is not picked")
    }

    @Test func rotatesOverAllHealthyBackendsInOrder() {
        let list = backends(3)
        var rr = RoundRobinBalancer()
        #expect((0..<6).map { _ in rr.pick(from: list)! } == [0, 1, 2, 0, 1, 2])
    }

    @Test func skipsUnhealthyBackends() {
        let list = backends(3)
        takeDown(list[1])
        var rr = RoundRobinBalancer()
        #expect((0..<4).map { _ in rr.pick(from: list)! } == [0, 2, 0, 2])
    }

    @Test func returnsNothingWhenNoBackendIsHealthy() {
        let list = backends(2)
        list.forEach(takeDown)
        var rr = RoundRobinBalancer()
        #expect(rr.pick(from: list) == nil)
        #expect(!LoadBalancer().anyHealthy(list))
        #expect(LoadBalancer().anyHealthy(backends(1)))
    }

    @Test func neverPicksABackendAlreadyTriedForTheSameRequest() {
        let list = backends(3)
        var rr = RoundRobinBalancer()
        var tried = AttemptSet()
        var order: [Int] = []
        while let i = rr.pick(from: list, excluding: tried) {
            order.append(i)
            tried.insert(i)
        }
        #expect(order.sorted() == [0, 1, 2])
    }

    /// A `UInt64` bitmask could not exclude backends at index 64 and above (issue 12 §1.2).
    @Test func excludesTriedBackendsAtAnyIndex() {
        let list = backends(150)
        var rr = RoundRobinBalancer()
        var tried = AttemptSet()
        var order: [Int] = []
        while let i = rr.pick(from: list, excluding: tried), order.count < 1000 {
            order.append(i)
            tried.insert(i)
        }
        #expect(order.count == 150)
        #expect(Set(order).count == 150)
    }

    @Test func attemptSetHoldsAnyIndexAndEmptiesWithoutForgettingCapacity() {
        var set = AttemptSet()
        #expect(set.isEmpty)
        for i in [0, 63, 64, 127, 128, 1000] { set.insert(i) }
        for i in [0, 63, 64, 127, 128, 1000] { #expect(set.contains(i)) }
        for i in [1, 62, 65, 126, 129, 999, 1001, 5000] { #expect(!set.contains(i)) }
        set.removeAll()
        #expect(set.isEmpty)
        #expect(!set.contains(1000) && !set.contains(0))
    }
}

struct HealthStateTests {
    private func checker(_ b: SharedBackend, healthy: Int = 2, unhealthy: Int = 3) -> HealthChecker {
        HealthChecker(loop: EventLoop(), backends: [b],
                      config: HealthCheckConfig(path: "/health", intervalMs: 1000, timeoutMs: 100,
                                                healthyThreshold: healthy, unhealthyThreshold: unhealthy))
    }

    private func backend() -> SharedBackend { sharedBackend(port: 1) }

    @Test func firstProbeDecidesAtOnceThenThresholdsApply() {
        let b = backend()
        let hc = checker(b)
        hc.record(b, ok: false, problem: "refused")
        #expect(!b.isHealthy, "a backend dead at start-up is down after one probe")
        hc.record(b, ok: true, problem: nil)
        #expect(!b.isHealthy, "one success is below healthy_threshold 2")
        hc.record(b, ok: true, problem: nil)
        #expect(b.isHealthy)
        hc.record(b, ok: false, problem: "x")
        hc.record(b, ok: false, problem: "x")
        #expect(b.isHealthy, "two failures are below unhealthy_threshold 3")
        hc.record(b, ok: true, problem: nil)
        hc.record(b, ok: false, problem: "x")
        hc.record(b, ok: false, problem: "x")
        #expect(b.isHealthy, "a success resets the failure streak")
        hc.record(b, ok: false, problem: "timeout")
        #expect(!b.isHealthy)
        #expect(b.probeRecord.lastError == "timeout")
    }
}

private func sharedBackend(port: UInt16, workers: Int = 1) -> SharedBackend {
    SharedBackend(config: BackendConfig(id: "b\(port)", url: "http://127.0.0.1:\(port)", host: "127.0.0.1", port: port),
                  address: SocketAddress(ip: "127.0.0.1", port: port)!, workers: workers)
}

struct SharedBackendTests {
    @Test func countersFromEveryWorkerAreSummed() {
        let shared = sharedBackend(port: 2, workers: 3)
        let w0 = Backend(shared: shared, worker: 0, pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000))
        let w2 = Backend(shared: shared, worker: 2, pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000))
        w0.activeRequests += 2
        w2.activeRequests += 3
        w0.activeRequests -= 1
        #expect(shared.activeRequests == 4)
        #expect(shared.idlePooledConnections == 0)
    }

    @Test func aVerdictIsSeenByEveryWorkersView() {
        let shared = sharedBackend(port: 3, workers: 2)
        let views = (0..<2).map { Backend(shared: shared, worker: $0, pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000)) }
        #expect(views.allSatisfy { $0.isHealthy })
        #expect(shared.recordProbe(ok: false, problem: "refused", healthyThreshold: 2, unhealthyThreshold: 3) == .down)
        #expect(views.allSatisfy { !$0.isHealthy })
        #expect(shared.recordProbe(ok: true, problem: nil, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(shared.recordProbe(ok: true, problem: nil, healthyThreshold: 2, unhealthyThreshold: 3) == .up)
        #expect(views.allSatisfy { $0.isHealthy })
    }
}
