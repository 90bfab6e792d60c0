import Testing
@testable import Proxy

/// The balancing policies with no sockets: distributions within stated bounds, weights honoured,
/// consistent hashing moving few keys when a backend leaves, keys read from requests, and the
/// `balance` / `hash_key` / `weight` configuration.
@Suite struct BalancingPolicyTests {
    private func backends(_ weights: [Int]) -> [Backend] {
        weights.enumerated().map { i, w in
            let port = UInt16(9100 + i)
            let shared = SharedBackend(config: BackendConfig(id: "b\(i)", url: "http://127.0.0.1:\(port)", host: "127.0.0.1", port: port, weight: w),
                                       address: SocketAddress(ip: "127.0.0.1", port: port)!, workers: 1)
            return Backend(shared: shared, worker: 0, pool: UpstreamPool(maxIdle: 1, idleTimeoutMs: 1000))
        }
    }

    private func takeDown(_ b: Backend) {
        _ = b.shared.recordProbe(ok: false, problem: "test", healthyThreshold: 1, unhealthyThreshold: 1)
    }

    private func counts(_ n: Int, _ picks: Int, _ pick: () -> Int?) -> [Int] {
        var c = [Int](repeating: 0, count: n)
        for _ in 0..<picks { if let i = pick() { c[i] += 1 } }
        return c
    }

    // MARK: round robin

    @Test func smoothWeightedRoundRobinSpreadsTheHeavyBackendsTurns() {
        let list = backends([5, 1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .roundRobin), backends: list)
        // nginx's smooth weighted round-robin: a a b a c a a, not a burst of five.
        #expect((0..<7).map { _ in lb.pick(from: list, excluding: AttemptSet())! } == [0, 0, 1, 0, 2, 0, 0])
        #expect(counts(3, 7000) { lb.pick(from: list, excluding: AttemptSet()) } == [5000, 1000, 1000])
        takeDown(list[0])
        #expect(counts(3, 100) { lb.pick(from: list, excluding: AttemptSet()) } == [0, 50, 50])
        var tried = AttemptSet()
        tried.insert(1)
        #expect(lb.pick(from: list, excluding: tried) == 2)
        tried.insert(2)
        #expect(lb.pick(from: list, excluding: tried) == nil)
    }

    @Test func equalWeightsRotateInOrder() {
        let list = backends([2, 2, 2])
        var lb = LoadBalancer(BalanceConfig(policy: .roundRobin), backends: list)
        #expect((0..<6).map { _ in lb.pick(from: list, excluding: AttemptSet())! } == [0, 1, 2, 0, 1, 2])
    }

    // MARK: least request, random

    @Test func leastRequestTakesTheFewestInFlightPerWeightAndSharesTies() {
        let list = backends([1, 2, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .leastRequest), backends: list)
        list[0].activeRequests = 3
        list[1].activeRequests = 4  // 4 / 2 = 2 < 3
        list[2].activeRequests = 5
        #expect(lb.pick(from: list, excluding: AttemptSet()) == 1)
        list[1].activeRequests = 8  // 8 / 2 = 4 > 3
        #expect(lb.pick(from: list, excluding: AttemptSet()) == 0)
        for b in list { b.activeRequests = 0 }
        // All idle: every one is a tie, picked about equally often.
        let c = counts(3, 9000) { lb.pick(from: list, excluding: AttemptSet()) }
        #expect(c.allSatisfy { $0 > 2600 && $0 < 3400 }, "\(c)")
        takeDown(list[1])
        #expect(counts(3, 300) { lb.pick(from: list, excluding: AttemptSet()) }[1] == 0)
    }

    @Test func leastRequestFollowsStartedAndFinished() {
        let list = backends([1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .leastRequest), backends: list)
        let a = lb.pick(from: list, excluding: AttemptSet())!
        lb.started(a, of: list)
        let b = lb.pick(from: list, excluding: AttemptSet())!
        #expect(a != b, "the busy one is avoided")
        lb.started(b, of: list)
        lb.finished(a, of: list, outcome: .response(status: 200), headMicros: 100)
        #expect(lb.pick(from: list, excluding: AttemptSet()) == a)
    }

    @Test func randomFollowsTheWeights() {
        let list = backends([1, 3, 6])
        var lb = LoadBalancer(BalanceConfig(policy: .random), backends: list)
        let c = counts(3, 30000) { lb.pick(from: list, excluding: AttemptSet()) }
        #expect(abs(c[0] - 3000) < 500 && abs(c[1] - 9000) < 800 && abs(c[2] - 18000) < 1000, "\(c)")
        var tried = AttemptSet()
        tried.insert(2)
        #expect(counts(3, 1000) { lb.pick(from: list, excluding: tried) }[2] == 0)
    }

    // MARK: p2c EWMA

    @Test func p2cEWMAStarvesASlowBackendButNotForEver() {
        let list = backends([1, 1, 1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .p2cEWMA), backends: list)
        // Backend 3 answers in 50 ms, the others in 1 ms.
        for _ in 0..<50 {
            for i in 0..<4 {
                lb.started(i, of: list)
                lb.finished(i, of: list, outcome: .response(status: 200), headMicros: i == 3 ? 50_000 : 1_000)
            }
        }
        let c = counts(4, 4000) { lb.pick(from: list, excluding: AttemptSet()) }
        // It wins only when drawn against itself, which two distinct choices never are.
        #expect(c[3] == 0, "\(c)")
        #expect(c[0...2].allSatisfy { $0 > 1100 }, "\(c)")
        // A failure counts as slow: at least 50 ms.
        lb.started(0, of: list)
        lb.finished(0, of: list, outcome: .connectFailure, headMicros: nil)
        var p = P2CEWMABalancer(count: 1, now: 0)
        p.observe(0, micros: 50_000, failed: false, now: 0)
        #expect(p.current(0, 0) == 50_000)
        // Unanswered for a minute, the estimate has decayed to almost nothing: it is tried again.
        #expect(p.current(0, 60_000_000_000) < 50_000 * 0.01)
        // A faster answer is averaged in, a slower one taken at once (peak).
        p.observe(0, micros: 1_000, failed: false, now: 1_000_000_000)
        #expect(p.current(0, 1_000_000_000) > 40_000 && p.current(0, 1_000_000_000) < 50_000)
        p.observe(0, micros: 90_000, failed: false, now: 1_000_000_000)
        #expect(p.current(0, 1_000_000_000) == 90_000)
    }

    @Test func p2cEWMAPrefersTheLessLoadedOfEqualBackends() {
        let list = backends([1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .p2cEWMA), backends: list)
        list[0].activeRequests = 5
        #expect(counts(2, 100) { lb.pick(from: list, excluding: AttemptSet()) } == [0, 100])
        var tried = AttemptSet()
        tried.insert(1)
        #expect(lb.pick(from: list, excluding: tried) == 0, "the only one left")
    }

    // MARK: consistent hashing

    private func keys(_ n: Int) -> [UInt64] { (0..<n).map { StableHash.hash("user-\($0)") } }

    @Test(arguments: [BalancePolicy.ringHash, .maglev])
    func consistentHashingSpreadsKeysAndMovesFewWhenOneOfTenLeaves(_ policy: BalancePolicy) {
        let list = backends(Array(repeating: 1, count: 10))
        var lb = LoadBalancer(BalanceConfig(policy: policy, hashKey: .clientIP), backends: list)
        let ks = keys(20000)
        let before = ks.map { lb.pick(from: list, excluding: AttemptSet(), key: $0)! }
        var share = [Int](repeating: 0, count: 10)
        for b in before { share[b] += 1 }
        #expect(share.allSatisfy { $0 > 1200 && $0 < 2800 }, "\(policy): \(share)")
        // The same key, the same backend, every time and in a fresh balancer (another worker).
        var other = LoadBalancer(BalanceConfig(policy: policy, hashKey: .clientIP), backends: list)
        #expect(ks.prefix(2000).map { other.pick(from: list, excluding: AttemptSet(), key: $0)! } == Array(before.prefix(2000)))
        // Backend 4 goes down.
        takeDown(list[4])
        lb.healthChanged(4, healthy: false, backends: list)
        let after = ks.map { lb.pick(from: list, excluding: AttemptSet(), key: $0)! }
        let moved = zip(before, after).filter { $0 != $1 }
        #expect(!after.contains(4))
        #expect(Double(moved.count) <= 0.12 * Double(ks.count), "\(policy): \(moved.count) of \(ks.count) keys moved")
        if policy == .ringHash {
            #expect(moved.allSatisfy { $0.0 == 4 }, "a ring moves only the keys of the backend that left")
        }
        // A retry of a key goes elsewhere.
        var tried = AttemptSet()
        tried.insert(after[0])
        let retry = lb.pick(from: list, excluding: tried, key: ks[0])
        #expect(retry != nil && retry != after[0])
    }

    @Test(arguments: [BalancePolicy.ringHash, .maglev])
    func consistentHashingHonoursWeights(_ policy: BalancePolicy) {
        let list = backends([1, 1, 2])
        var lb = LoadBalancer(BalanceConfig(policy: policy, hashKey: .path), backends: list)
        var share = [0, 0, 0]
        for k in keys(20000) { share[lb.pick(from: list, excluding: AttemptSet(), key: k)!] += 1 }
        #expect(share[0] > 4000 && share[0] < 6000 && share[1] > 4000 && share[1] < 6000 && share[2] > 8500 && share[2] < 11500,
                "\(policy): \(share)")
    }

    @Test func removingABackendFromTheConfigMovesOnlyItsKeysOnTheRing() {
        let ten = backends(Array(repeating: 1, count: 10))
        let ring10 = RingHashBalancer(ids: ten.map(\.id), weights: ten.map(\.weight))
        let nine = Array(ten[0..<4]) + Array(ten[5...])
        let ring9 = RingHashBalancer(ids: nine.map(\.id), weights: nine.map(\.weight))
        var moved = 0
        let ks = keys(20000)
        for k in ks {
            let a = ten[ring10.pick(key: k, from: ten, excluding: AttemptSet())!].id
            let b = nine[ring9.pick(key: k, from: nine, excluding: AttemptSet())!].id
            if a != b { moved += 1; #expect(a == "b4") }
        }
        #expect(Double(moved) <= 0.12 * Double(ks.count))
    }

    @Test func aRequestWithoutItsKeyGoesRoundRobin() throws {
        let list = backends([1, 1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .maglev, hashKey: .header("x-user")), backends: list)
        let head = try HeadParser.parseRequest(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8), limits: HeadLimits())
        #expect(lb.key(of: head, clientIP: Array("10.0.0.1".utf8)) == nil)
        #expect((0..<3).map { _ in lb.pick(from: list, excluding: AttemptSet(), key: nil)! } == [0, 1, 2])
    }

    // MARK: keys of requests

    @Test func hashKeysAreReadFromTheRequest() throws {
        let head = try HeadParser.parseRequest(Array(("GET /cart/items?session=abc&x=1 HTTP/1.1\r\nHost: shop\r\nX-User: alice\r\n"
            + "Cookie: theme=dark; srv=node-7\r\n\r\n").utf8), limits: HeadLimits())
        let ip = Array("192.0.2.7".utf8)
        func key(_ k: HashKey) -> UInt64? {
            let name: [UInt8] = switch k {
            case .header(let n), .cookie(let n), .query(let n): Array(n.utf8)
            default: []
            }
            return RequestHashKey.hash(k, name: name, head: head, clientIP: ip)
        }
        #expect(key(.clientIP) == StableHash.hash("192.0.2.7"))
        #expect(key(.path) == StableHash.hash("/cart/items"))
        #expect(key(.header("x-user")) == StableHash.hash("alice"))
        #expect(key(.cookie("srv")) == StableHash.hash("node-7"))
        #expect(key(.cookie("theme")) == StableHash.hash("dark"))
        #expect(key(.query("session")) == StableHash.hash("abc"))
        #expect(key(.query("x")) == StableHash.hash("1"))
        #expect(key(.header("x-missing")) == nil)
        #expect(key(.cookie("sr")) == nil, "a prefix of a cookie name is not the cookie")
        #expect(key(.query("sess")) == nil)
    }

    @Test func stableHashIsTheSameEverywhere() {
        // Fixed values: a ring built by another process or another release must agree.
        #expect(StableHash.hash("") == StableHash.mix(0xcbf2_9ce4_8422_2325))
        #expect(StableHash.hash("b0-0") == StableHash.hash(Array("b0-0".utf8), 0..<4))
        #expect(StableHash.hash("a") != StableHash.hash("b"))
    }

    // MARK: configuration

    @Test func balanceHashKeyAndWeightAreConfigured() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1", "weight": 3}, {"url": "http://b:1"}], "balance": "p2c_ewma",
             "upstreams": {"api": {"backends": [{"url": "http://c:1"}], "balance": "maglev", "hash_key": "cookie:srv"}},
             "routes": [{"path": "/api", "upstream": "api"}]}
            """#.utf8), file: "config.json")
        #expect(config.backends.map(\.weight) == [3, 1])
        #expect(config.allUpstreams[0].balance == BalanceConfig(policy: .p2cEWMA))
        #expect(config.allUpstreams[1].balance == BalanceConfig(policy: .maglev, hashKey: .cookie("srv")))
        #expect(HashKey.parse("header:X-User") == .success(.header("x-user")))

        func error(_ json: String) -> String {
            do { _ = try ConfigLoader.parse(Array(json.utf8), file: "config.json"); return "loaded" } catch { return error.description }
        }
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "balance": "least_requests"}"#)
            .contains(#"balance: unknown policy "least_requests""#))
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "balance": "least_requests"}"#).contains(#"did you mean "least_request"?"#))
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "balance": "ring_hash"}"#)
            .contains(#"hash_key: "balance": "ring_hash" hashes a key of each request; say which one"#))
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "hash_key": "client_ip"}"#)
            .contains(#"hash_key: "client_ip" is only used by "balance": "ring_hash" or "maglev""#))
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "balance": "maglev", "hash_key": "ip"}"#)
            .contains(#"hash_key: expected "client_ip", "path", "header:NAME", "cookie:NAME" or "query:NAME", got "ip""#))
        #expect(error(#"{"backends": [{"url": "http://a:1", "weight": 0}]}"#).contains("backends[0].weight: must be at least 1, got 0"))
        #expect(error(#"{"upstreams": {"u": {"backends": [{"url": "http://a:1"}], "balance": "maglev"}}, "routes": [{"path": "/", "upstream": "u"}]}"#)
            .contains("upstreams.u.hash_key"))
    }
}
