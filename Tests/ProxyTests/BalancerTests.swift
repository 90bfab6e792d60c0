import Testing
@testable import Proxy

struct BalancerTests {
    private func backends(_ n: Int) -> [Backend] {
        (0..<n).map { i in
            Backend(id: "b\(i)", url: "http://127.0.0.1:\(9000 + i)", address: SocketAddress(ip: "127.0.0.1", port: UInt16(9000 + i))!,
                    authority: "127.0.0.1:\(9000 + i)", pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000))
        }
    }

    @Test func rotatesOverAllHealthyBackendsInOrder() {
        let list = backends(3)
        var rr = RoundRobinBalancer()
        #expect((0..<6).map { _ in rr.pick(from: list)! } == [0, 1, 2, 0, 1, 2])
    }

    @Test func skipsUnhealthyBackends() {
        let list = backends(3)
        list[1].isHealthy = false
        var rr = RoundRobinBalancer()
        #expect((0..<4).map { _ in rr.pick(from: list)! } == [0, 2, 0, 2])
    }

    @Test func returnsNothingWhenNoBackendIsHealthy() {
        let list = backends(2)
        list.forEach { $0.isHealthy = false }
        var rr = RoundRobinBalancer()
        #expect(rr.pick(from: list) == nil)
        #expect(!RoundRobinBalancer.anyHealthy(list))
    }

    @Test func neverPicksABackendAlreadyTriedForTheSameRequest() {
        let list = backends(3)
        var rr = RoundRobinBalancer()
        var tried: UInt64 = 0
        var order: [Int] = []
        while let i = rr.pick(from: list, excluding: tried) {
            order.append(i)
            tried |= 1 << UInt64(i)
        }
        #expect(order.sorted() == [0, 1, 2])
    }
}

struct HealthStateTests {
    private func checker(_ b: Backend, healthy: Int = 2, unhealthy: Int = 3) -> HealthChecker {
        HealthChecker(loop: EventLoop(), backends: [b],
                      config: HealthCheckConfig(path: "/health", intervalMs: 1000, timeoutMs: 100,
                                                healthyThreshold: healthy, unhealthyThreshold: unhealthy))
    }

    private func backend() -> Backend {
        Backend(id: "b", url: "http://127.0.0.1:1", address: SocketAddress(ip: "127.0.0.1", port: 1)!,
                authority: "127.0.0.1:1", pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000))
    }

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
        #expect(b.lastProbeError == "timeout")
    }
}
