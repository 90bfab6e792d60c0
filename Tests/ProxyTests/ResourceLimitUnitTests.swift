import Foundation
import Glibc
import Testing
import TestSupport
@testable import Proxy

/// Issue 12 §1.7, §1.11, §1.12 at unit level: local resource errors, the descriptor budget,
/// deferred accepting and the asynchronous resolver.
struct ResourceLimitUnitTests {

    // MARK: §1.12 local resource errors

    @Test func localResourceErrorsAreTheProxysOwnNotTheBackends() {
        for code in [UVError.tooManyOpenFiles, UVError.tooManyOpenFilesInSystem, UVError.noBufferSpace,
                     UVError.outOfMemory, UVError.addressNotAvailable] {
            #expect(UVError(code).isLocalResourceError, "\(UVError(code))")
            #expect(UVError(code).localResourceProblem != nil)
        }
        #expect(UVError(-EMFILE).isLocalResourceError && UVError(-ENFILE).isLocalResourceError)
        for code in [UVError.connectionRefused, UVError.connectionReset, UVError.timedOut, UVError.eof,
                     UVError.canceled, Int32(-EHOSTUNREACH), Int32(-ENETUNREACH), Int32(-EPIPE)] {
            #expect(!UVError(code).isLocalResourceError, "\(UVError(code))")
            #expect(UVError(code).localResourceProblem == nil)
        }
        #expect(UVError(UVError.tooManyOpenFiles).localResourceProblem?.contains("out of file descriptors") == true)
    }

    /// Idle pooled connections hold descriptors, so they count against `limits.max_connections`
    /// (summed over workers) and give way to clients: the oldest is closed first, and while a
    /// client waits on another worker none is pooled.
    @Test func idlePooledConnectionsCountAgainstTheClientLimitAndGiveWay() {
        let count = ConnectionCount(workers: 2)
        let loop = EventLoop()
        let shared = SharedBackend(config: BackendConfig(id: "b1", url: "http://127.0.0.1:1", host: "127.0.0.1", port: 1),
                                   address: SocketAddress(ip: "127.0.0.1", port: 1)!, workers: 2)
        let backend = Backend(shared: shared, worker: 0, pool: UpstreamPool(maxIdle: 10, idleTimeoutMs: 10_000))
        let tally = IdleUpstreamTally(worker: 0, shared: count)
        let otherWorker = IdleUpstreamTally(worker: 1, shared: count)
        backend.pool.tally = tally
        func pooled(at now: UInt64) -> UpstreamConnection {
            let c = UpstreamConnection(backend: backend, stream: TCPStream(loop: loop))
            backend.pool.put(c, now: now)
            return c
        }
        let first = pooled(at: 1)
        _ = pooled(at: 2)
        count.add()  // one client
        #expect(tally.count == 2 && backend.pool.idleCount == 2)
        #expect(!count.hasRoom(limit: 3), "1 client + 2 idle fill a limit of 3")
        #expect(count.clientsHaveRoom(limit: 3), "the idle connections are what is in the way")
        #expect(count.hasRoom(limit: 4))
        otherWorker.adjust(by: 1)
        #expect(!count.hasRoom(limit: 4), "another worker's idle connections count too")
        #expect(backend.pool.oldestIdleSince == 1)
        backend.pool.closeOldest()
        #expect(first.isClosed, "the least recently pooled goes first")
        #expect(tally.count == 1 && count.hasRoom(limit: 4))
        count.idleConnectionsWanted = true
        #expect(tally.isWanted)
        let refused = pooled(at: 3)
        #expect(refused.isClosed && backend.pool.idleCount == 1, "nothing is pooled while a client waits for room")
        count.idleConnectionsWanted = false
        _ = pooled(at: 4)
        #expect(tally.count == 2)
        backend.pool.tally = nil
        #expect(tally.count == 0, "a pool that leaves the worker takes its part of the count with it")
        backend.pool.tally = tally
        #expect(tally.count == 2)
        backend.pool.closeAll()
        #expect(tally.count == 0 && count.hasRoom(limit: 3) && !count.hasRoom(limit: 2), "1 client + the other worker's 1")
        otherWorker.adjust(by: -1)
        count.release()
        for _ in 0..<10 { _ = loop.runOnce(wait: false) }  // the closes complete
    }

    @Test func aProbeThatCannotOpenASocketGivesNoVerdict() {
        #expect(ProbeOutcome.error(UVError.tooManyOpenFiles, during: "connect")
            == .noVerdict("connect: the proxy is out of file descriptors (EMFILE: its own limit, ulimit -n)"))
        guard case .noVerdict = ProbeOutcome.error(UVError.addressNotAvailable, during: "connect") else {
            Issue.record("EADDRNOTAVAIL is local"); return
        }
        #expect(ProbeOutcome.error(UVError.connectionRefused, during: "connect") == .failure("connect: ECONNREFUSED"))
        #expect(ProbeOutcome.error(UVError.connectionReset, during: "read") == .failure("ECONNRESET"))
    }

    @Test func noVerdictLeavesAHealthyBackendUpAndItsStreaksAlone() {
        let b = SharedBackend(config: BackendConfig(id: "b1", url: "http://127.0.0.1:1", host: "127.0.0.1", port: 1),
                              address: SocketAddress(ip: "127.0.0.1", port: 1)!, workers: 1)
        let checker = HealthChecker(loop: EventLoop(), backends: [b],
                                    config: HealthCheckConfig(path: "/health", intervalMs: 1000, timeoutMs: 100,
                                                              healthyThreshold: 3, unhealthyThreshold: 1))
        checker.record(b, .success)
        let before = b.probeRecord
        for _ in 0..<10 { checker.record(b, .noVerdict("connect: out of descriptors")) }
        #expect(b.isHealthy, "unhealthy_threshold 1: a single counted failure would have taken it down")
        #expect(b.probeRecord == before)
        #expect(checker.isSkippingForLocalError)
        checker.record(b, .failure("connect: ECONNREFUSED"))
        #expect(!b.isHealthy, "a real failure still counts")
        #expect(!checker.isSkippingForLocalError)
    }

    // MARK: §1.11 the descriptor budget

    @Test func maxConnectionsIsDerivedFromTheDescriptorLimit() {
        #expect(ConnectionBudget.reserve(workers: 2, backends: 1) == 49)
        #expect(ConnectionBudget.maxConnections(fdLimit: 256, workers: 2, backends: 1) == 103)
        #expect(ConnectionBudget.maxConnections(fdLimit: 20000, workers: 2, backends: 2) == 9975)
        #expect(ConnectionBudget.maxConnections(fdLimit: 40, workers: 2, backends: 1) == 1, "never 0")
        #expect(ConnectionBudget.maxConnections(fdLimit: -1, workers: 2, backends: 1) == ConnectionBudget.fallback)
        #expect(ConnectionBudget.maxConnections(fdLimit: 1 << 30, workers: 1, backends: 1) == 1_000_000)

        let derived = ConnectionBudget.effective(LimitsConfig(), fdLimit: 256, workers: 2, backends: 1)
        #expect(derived.maxConnections == 103 && derived.warning == nil)
        let within = ConnectionBudget.effective(LimitsConfig(maxConnections: 50), fdLimit: 256, workers: 2, backends: 1)
        #expect(within.maxConnections == 50 && within.warning == nil)
        let beyond = ConnectionBudget.effective(LimitsConfig(maxConnections: 10000), fdLimit: 256, workers: 2, backends: 1)
        #expect(beyond.maxConnections == 10000, "an explicit value still wins")
        #expect(beyond.warning?.contains("limits.max_connections 10000 is more than the file-descriptor limit 256 allows (103") == true,
                "\(beyond.warning ?? "no warning")")
    }

    @Test func maxConnectionsLeftOutOrNullMeansDerived() throws {
        func limits(_ json: String) throws -> LimitsConfig {
            try ConfigLoader.parse(Array(json.utf8), file: "config.json").limits
        }
        #expect(try limits(#"{"backends":[{"url":"http://127.0.0.1:1"}]}"#).maxConnections == nil)
        #expect(try limits(#"{"backends":[{"url":"http://127.0.0.1:1"}],"limits":{"max_connections":null}}"#).maxConnections == nil)
        #expect(try limits(#"{"backends":[{"url":"http://127.0.0.1:1"}],"limits":{"max_connections":12}}"#).maxConnections == 12)
        #expect(throws: ConfigError.self) {
            try limits(#"{"backends":[{"url":"http://127.0.0.1:1"}],"limits":{"max_connections":0}}"#)
        }
    }

    /// The listener can leave an arrived connection pending (libuv stops polling the socket, so
    /// the next ones stay in the kernel's queue) and take it later: nothing is closed.
    @Test func aListenerAtItsLimitLeavesConnectionsWaitingAndTakesThemLater() throws {
        let loop = EventLoop()
        let listener = TCPListener(loop: loop)
        var room = false
        var accepted: [TCPStream] = []
        listener.shouldAccept = { room }
        listener.onAccept = { accepted.append($0) }
        try listener.listen(on: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let port = try #require(listener.localAddress?.port)
        let first = try connectToLoopback(port), second = try connectToLoopback(port)
        defer { close(first); close(second) }
        func spin(seconds: Double = 2, until condition: () -> Bool) {
            let deadline = Date().addingTimeInterval(seconds)
            while !condition() && Date() < deadline { loop.runOnce(wait: false); usleep(1000) }
        }
        spin { listener.hasPending }
        #expect(listener.hasPending)
        spin(seconds: 0.2) { !accepted.isEmpty }
        #expect(accepted.isEmpty, "nothing accepted while there is no room")
        room = true
        listener.acceptPending()
        #expect(accepted.count == 1)
        spin { accepted.count == 2 }
        #expect(accepted.count == 2, "watching the socket resumed: the queued connection came too")
        for s in accepted { s.close() }
        listener.close()
        loop.runOnce(wait: false)
    }

    // MARK: §1.7 the asynchronous resolver

    @Test func theResolverAnswersOnTheLoopInOrder() throws {
        let loop = EventLoop()
        let resolver = HostResolver(loop: loop)
        var answers: [Result<SocketAddress, AddressError>]?
        resolver.resolve([(host: "localhost", port: 8080), (host: "10.1.2.3", port: 81), (host: "::1", port: 82)]) { answers = $0 }
        #expect(answers == nil, "a name needs a lookup: the answer comes later, on the loop")
        #expect(resolver.isBusy)
        let deadline = Date().addingTimeInterval(10)
        while answers == nil && Date() < deadline { loop.runOnce(wait: true) }
        let results = try #require(answers)
        #expect(results.map { (try? $0.get())?.description } == ["127.0.0.1:8080", "10.1.2.3:81", "[::1]:82"])
        #expect(!resolver.isBusy)

        var literalOnly: [Result<SocketAddress, AddressError>]?
        resolver.resolve([(host: "127.0.0.1", port: 1)]) { literalOnly = $0 }
        #expect(literalOnly?.count == 1, "IP literals are answered at once")
        var none: [Result<SocketAddress, AddressError>]?
        resolver.resolve([]) { none = $0 }
        #expect(none?.isEmpty == true)
    }

    @Test func cancelledLookupsNeverCallBack() {
        let loop = EventLoop()
        let resolver = HostResolver(loop: loop)
        var called = false
        resolver.resolve([(host: "localhost", port: 1)]) { _ in called = true }
        resolver.cancelAll()
        #expect(!resolver.isBusy)
        loop.run()  // returns once the lookup (cancelled, or finished on the pool) has called back
        #expect(!called)
    }
}

/// A connection to 127.0.0.1:`port` (the handshake completes in the kernel's queue, accepted or not).
private func connectToLoopback(_ port: UInt16) throws -> Int32 {
    guard let fd = TestSupport.connectToLoopback(port) else { throw AddressError(message: "connect failed: \(errno)") }
    return fd
}
