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
        // Requests that stay in flight spread in proportion to weight: (in flight + 1) ÷ weight
        // (with plain in-flight an idle light backend would beat a busy heavy one every time).
        for _ in 0..<400 {
            let i = lb.pick(from: list, excluding: AttemptSet())!
            lb.started(i, of: list)
        }
        #expect(list.map(\.activeRequests) == [100, 200, 100] || list.map(\.activeRequests).enumerated().allSatisfy { abs($1 - [100, 200, 100][$0]) <= 1 },
                "\(list.map(\.activeRequests))")
        for b in list { b.activeRequests = 0 }
        // Idle and equal: ties, broken at random (about equally often).
        let equal = backends([1, 1, 1])
        var eq = LoadBalancer(BalanceConfig(policy: .leastRequest), backends: equal)
        let c = counts(3, 9000) { eq.pick(from: equal, excluding: AttemptSet()) }
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

    @Test func p2cEWMADrawsItsCandidatesInProportionToWeight() {
        // A canary of weight 1 beside a backend of weight 99, both equally fast and idle: the
        // heavy one should take nearly everything (uniform draws would give the canary a share
        // whenever it is drawn with... itself or another light one).
        let list = backends([99, 1, 1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .p2cEWMA), backends: list)
        let c = counts(4, 4000) { lb.pick(from: list, excluding: AttemptSet()) }
        #expect(c[0] > 3600, "\(c)")
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
        lb.availabilityChanged(backends: list)
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

    @Test func skewedWeightsKeepTablesInProportionAndInBounds() {
        // Maglev: shares in proportion to weight (one heavy, many light ones).
        let names = (0..<301).map { "http://10.0.0.\($0):80" }
        let weights = [1000] + Array(repeating: 1, count: 300)
        let maglev = MaglevBalancer(names: names, weights: weights, healthy: names.map { _ in true })
        let shares = maglev.shares(count: names.count)
        #expect(shares.reduce(0, +) == MaglevBalancer.tableSize)
        let expected = Double(MaglevBalancer.tableSize) * 1000 / 1300
        #expect(abs(Double(shares[0]) - expected) <= 2, "\(shares[0]) vs \(expected)")
        #expect(shares[1...].allSatisfy { $0 == 50 || $0 == 51 }, "\(Set(shares[1...]))")
        // Ring: weights with no common divisor stay within the point budget, in proportion.
        let ringNames = (0..<900).map { "http://10.1.\($0 / 250).\($0 % 250):80" }
        let ring = RingHashBalancer(names: ringNames, weights: (0..<900).map { $0 % 2 == 0 ? 999 : 1000 })
        #expect(ring.points.count <= RingHashBalancer.maxPoints + 900, "\(ring.points.count) points")
    }

    @Test func theRingsPrefixBucketsFindTheSameOwnerAsASearchOfTheWholeRing() {
        for weights in [[1, 1, 1], [3, 1], Array(repeating: 1, count: 10), (0..<900).map { $0 % 2 == 0 ? 999 : 1000 }] {
            let list = backends(weights)
            let ring = RingHashBalancer(names: list.map(\.url), weights: weights)
            var checked = 0
            // Random keys, the points themselves, their neighbours, and the ends of the circle.
            let probes = keys(5000) + ring.points.prefix(500).flatMap { [$0, $0 &- 1, $0 &+ 1] } + [0, 1, UInt64.max, UInt64.max - 1]
            for k in probes {
                let first = ring.points.firstIndex { $0 >= k } ?? 0
                let expected = Int(ring.owners[first])
                #expect(ring.pick(key: k, from: list, excluding: AttemptSet()) == expected)
                checked += 1
            }
            #expect(checked == probes.count)
        }
    }

    @Test func removingABackendFromTheConfigMovesOnlyItsKeysOnTheRing() {
        let ten = backends(Array(repeating: 1, count: 10))
        let ring10 = RingHashBalancer(names: ten.map(\.url), weights: ten.map { $0.shared.config.weight })
        let nine = Array(ten[0..<4]) + Array(ten[5...])
        // Positions shift (backend 5 is now at index 4): the ring goes by URL, not position.
        let ring9 = RingHashBalancer(names: nine.map(\.url), weights: nine.map { $0.shared.config.weight })
        var moved = 0
        let ks = keys(20000)
        for k in ks {
            let a = ten[ring10.pick(key: k, from: ten, excluding: AttemptSet())!].id
            let b = nine[ring9.pick(key: k, from: nine, excluding: AttemptSet())!].id
            if a != b { moved += 1; #expect(a == "b4") }
        }
        #expect(Double(moved) <= 0.12 * Double(ks.count))
    }

    @Test func maglevDoesNotDependOnTheOrderOfTheBackends() {
        let list = backends([1, 2, 1, 1, 3])
        let reversed = Array(list.reversed())
        let a = MaglevBalancer(names: list.map(\.url), weights: list.map { $0.shared.config.weight }, healthy: list.map { _ in true })
        let b = MaglevBalancer(names: reversed.map(\.url), weights: reversed.map { $0.shared.config.weight }, healthy: reversed.map { _ in true })
        for k in keys(3000) {
            #expect(list[a.pick(key: k, from: list, excluding: AttemptSet())!].url == reversed[b.pick(key: k, from: reversed, excluding: AttemptSet())!].url)
        }
    }

    @Test func aStaleOrExhaustedMaglevTableFallsBackToRoundRobin() {
        let list = backends([1, 1, 1])
        var lb = LoadBalancer(BalanceConfig(policy: .maglev, hashKey: .clientIP), backends: list)
        var tried = AttemptSet()
        for i in 0..<3 { takeDown(list[i]) }
        lb.availabilityChanged(backends: list)  // an empty table
        _ = list[1].shared.recordProbe(ok: true, problem: nil, healthyThreshold: 1, unhealthyThreshold: 1)
        // Backend 1 is back but the table is not rebuilt yet (that happens on the sweep).
        #expect(lb.pick(from: list, excluding: tried, key: 42) == 1)
        tried.insert(1)
        #expect(lb.pick(from: list, excluding: tried, key: 42) == nil)
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
            return RequestHashKey.hash(.init(k), name: name, head: head, target: head.target, clientIP: ip)
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
        let empty = try HeadParser.parseRequest(Array("GET /?session=&a=1 HTTP/1.1\r\nHost: shop\r\nX-User:\r\nCookie: srv=\r\n\r\n".utf8),
                                                limits: HeadLimits())
        for k in [HashKey.header("x-user"), .cookie("srv"), .query("session")] {
            let name: [UInt8] = switch k {
            case .header(let n), .cookie(let n), .query(let n): Array(n.utf8)
            default: []
            }
            #expect(RequestHashKey.hash(.init(k), name: name, head: empty, target: empty.target, clientIP: ip) == nil, "an empty \(k) is no key")
        }
        // An absolute-form request hashes its path as routing sees it.
        let absolute = try HeadParser.parseRequest(Array("GET http://shop/cart/items?x=1 HTTP/1.1\r\nHost: shop\r\n\r\n".utf8), limits: HeadLimits())
        let origin = absolute.bytes.firstRange(of: Array("/cart".utf8))!.lowerBound..<absolute.target.upperBound
        #expect(RequestHashKey.hash(.path, name: [], head: absolute, target: origin, clientIP: ip) == StableHash.hash("/cart/items"))
    }

    @Test func stableHashIsTheSameEverywhere() {
        // Fixed values: a ring built by another process or another release must agree.
        #expect(StableHash.hash("") == StableHash.mix(0xcbf2_9ce4_8422_2325))
        #expect(StableHash.hash("b0-0") == StableHash.hash(Array("b0-0".utf8), 0..<4))
        #expect(StableHash.hash("a") != StableHash.hash("b"))
    }

    // MARK: passive health

    private func outlier(_ failures: Int, baseMs: Int = 1000, maxPercent: Int = 50) -> BalanceConfig {
        var c = BalanceConfig(policy: .roundRobin)
        c.outlierDetection.consecutiveFailures = failures
        c.outlierDetection.baseEjectionMs = baseMs
        c.outlierDetection.maxEjectionPercent = maxPercent
        return c
    }

    private func attempt(_ lb: inout LoadBalancer, _ i: Int, _ list: [Backend], _ outcome: AttemptOutcome) {
        lb.started(i, of: list)
        lb.finished(i, of: list, outcome: outcome, headMicros: 100)
    }

    @Test func failuresInARowEjectABackendAndASuccessEndsTheStreak() {
        let list = backends([1, 1, 1, 1])
        var lb = LoadBalancer(outlier(3), backends: list)
        attempt(&lb, 0, list, .connectFailure)
        attempt(&lb, 0, list, .response(status: 503))
        attempt(&lb, 0, list, .response(status: 404))  // an answer: the streak ends
        attempt(&lb, 0, list, .upstreamFailure)
        attempt(&lb, 0, list, .timeout)
        #expect(!list[0].shared.isEjected && list[0].shared.consecutiveFailures == 2)
        attempt(&lb, 0, list, .notTheBackend)  // not counted either way
        attempt(&lb, 0, list, .response(status: 500))  // the application's answer: ends the streak
        #expect(!list[0].shared.isEjected && list[0].shared.consecutiveFailures == 0)
        attempt(&lb, 0, list, .response(status: 502))
        attempt(&lb, 0, list, .timeout)
        attempt(&lb, 0, list, .response(status: 504))
        #expect(list[0].shared.isEjected && list[0].shared.ejections == 1)
        #expect(!list[0].isAvailable && list[0].isHealthy)
        #expect(counts(4, 300) { lb.pick(from: list, excluding: AttemptSet()) }[0] == 0)
        #expect(lb.anyHealthy(list))
    }

    @Test func neverMoreThanMaxEjectionPercentAndNeverTheOnlyBackend() {
        let list = backends([1, 1, 1, 1])
        var lb = LoadBalancer(outlier(1, maxPercent: 50), backends: list)
        for i in 0..<4 { attempt(&lb, i, list, .connectFailure) }
        #expect(list.filter { $0.shared.isEjected }.count == 2, "50 % of four")
        let one = backends([1])
        var single = LoadBalancer(outlier(1, maxPercent: 100), backends: one)
        for _ in 0..<10 { attempt(&single, 0, one, .connectFailure) }
        #expect(!one[0].shared.isEjected, "never the last available backend, even at 100 %")
        // One of two is down by the active check: the other is the last available one.
        let two = backends([1, 1])
        takeDown(two[0])
        var pair = LoadBalancer(outlier(1, maxPercent: 100), backends: two)
        for _ in 0..<10 { attempt(&pair, 1, two, .connectFailure) }
        #expect(!two[1].shared.isEjected)
        var off = LoadBalancer(outlier(0), backends: list)
        let fresh = backends([1, 1])
        for _ in 0..<10 { attempt(&off, 0, fresh, .connectFailure) }
        #expect(!fresh[0].shared.isEjected, "consecutive_failures 0 turns it off")
    }

    @Test func ejectionsEndWhenDueLongerEachTimeOrWhenTheActiveCheckPasses() {
        let list = backends([1, 1])
        let upstream = Upstream(shared: SharedUpstream(name: "u", workers: 1), worker: 0, backends: list, balance: outlier(2, baseMs: 1000))
        let shared = list[0].shared
        #expect(shared.eject(nowNs: 0, baseMs: 1000) == 1000)
        #expect(shared.eject(nowNs: 0, baseMs: 1000) == nil, "one ejection at a time")
        #expect(upstream.noticeHealthChanges(nowNs: 500_000_000) == [0], "the balancer hears of the ejection")
        #expect(upstream.noticeHealthChanges(nowNs: 1_000_000_001) == [0], "and of its end")
        #expect(!shared.isEjected)
        // Ejected again without a success in between: twice as long.
        #expect(shared.eject(nowNs: 2_000_000_000, baseMs: 1000) == 2000)
        #expect(!shared.endEjection(nowNs: 3_000_000_000))
        #expect(shared.endEjection(nowNs: 4_000_000_000))
        // A success outside an ejection starts the count over.
        shared.noteSuccess()
        #expect(shared.eject(nowNs: 5_000_000_000, baseMs: 1000) == 1000)
        // The active check passing (after a failure) ends it at once.
        _ = shared.recordProbe(ok: false, problem: "x", healthyThreshold: 1, unhealthyThreshold: 1)
        _ = shared.recordProbe(ok: true, problem: nil, healthyThreshold: 1, unhealthyThreshold: 1)
        #expect(!shared.isEjected)
    }

    @Test func outlierDetectionIsConfigured() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1"}], "outlier_detection": {"consecutive_failures": 3, "base_ejection_ms": 500},
             "upstreams": {"api": {"backends": [{"url": "http://c:1"}], "outlier_detection": {"consecutive_failures": 0}}},
             "routes": [{"path": "/api", "upstream": "api"}]}
            """#.utf8), file: "config.json")
        let top = config.allUpstreams[0].balance.outlierDetection
        #expect(top.consecutiveFailures == 3 && top.baseEjectionMs == 500 && top.maxEjectionPercent == 50)
        #expect(!config.allUpstreams[1].balance.outlierDetection.isEnabled)
        #expect(OutlierDetectionConfig().consecutiveFailures == 5, "on by default")
        do {
            _ = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "outlier_detection": {"max_ejection_percent": 101}}"#.utf8),
                                       file: "config.json")
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains("outlier_detection.max_ejection_percent: must be at most 100, got 101"))
        }
    }

    // MARK: retries

    @Test func theRetryBudgetAllowsAShareOfRequestsPlusAFloor() {
        var config = RetriesConfig()
        config.budgetPercent = 20
        config.minRetriesPerS = 0
        var budget = RetryBudget(config, now: 0)
        // Starts with its capacity (10 here: ten seconds of a zero floor, at least 10).
        var allowed = 0
        for _ in 0..<50 where budget.withdraw(now: 0) { allowed += 1 }
        #expect(allowed == 10)
        // 100 requests deposit 20 retries' worth.
        for _ in 0..<100 { budget.requestStarted() }
        allowed = 0
        for _ in 0..<50 where budget.withdraw(now: 0) { allowed += 1 }
        #expect(allowed == 10, "capped at the capacity")
        for _ in 0..<25 { budget.requestStarted() }
        allowed = 0
        for _ in 0..<50 where budget.withdraw(now: 0) { allowed += 1 }
        #expect(allowed == 5, "20 % of 25 requests")
        // The floor refills with time.
        config.minRetriesPerS = 10
        var floor = RetryBudget(config, now: 0)
        for _ in 0..<100 { _ = floor.withdraw(now: 0) }
        let spent = floor.withdraw(now: 0)
        let afterWait = floor.withdraw(now: 150_000_000)
        let again = floor.withdraw(now: 150_000_000)
        #expect(!spent)
        #expect(afterWait, "1.5 retries after 150 ms at 10/s")
        #expect(!again)
    }

    @Test func onlyARequestThatCanRunTwiceAndWhoseAnswerWasNotRelayedIsRetried() {
        var m = ExchangeMachine()
        m.begin(framing: .none, isIdempotent: true, wantsUpgrade: false)
        _ = m.attemptStarted()
        #expect(m.mayRetry(maxRetries: 1))
        m.retryStarted()
        #expect(!m.mayRetry(maxRetries: 1), "one retry allowed")
        #expect(m.mayRetry(maxRetries: 2))
        m.begin(framing: .contentLength(10), isIdempotent: true, wantsUpgrade: false)
        #expect(!m.mayRetry(maxRetries: 1), "a body")
        m.begin(framing: .none, isIdempotent: false, wantsUpgrade: false)
        #expect(!m.mayRetry(maxRetries: 1), "POST")
        m.begin(framing: .none, isIdempotent: true, wantsUpgrade: false)
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        #expect(!m.mayRetry(maxRetries: 1), "a response under way")
        m.begin(framing: .none, isIdempotent: true, wantsUpgrade: false)
        _ = m.interimResponse(maxInterim: 16, clientVersionMinor: 1)
        #expect(!m.mayRetry(maxRetries: 1), "a 103 already relayed")
    }

    @Test func retriesAreConfigured() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1"}], "retries": {"attempts": 2, "on": ["reset", "503"], "per_try_timeout_ms": 300}}
            """#.utf8), file: "config.json")
        let r = config.allUpstreams[0].balance.retries
        #expect(r.attempts == 2 && r.on == [.reset, .status503] && r.perTryTimeoutMs == 300 && r.budgetPercent == 20)
        #expect(RetriesConfig().attempts == 1 && RetriesConfig().on == [.reset], "one retry after a reset by default")
        do {
            _ = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "retries": {"on": ["rest"]}}"#.utf8), file: "config.json")
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains(#"retries.on[0]: unknown condition "rest""#) && error.description.contains(#"did you mean "reset"?"#),
                    "\(error)")
        }
    }

    @Test func stickyIsConfigured() throws {
        let config = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "sticky": {"cookie": "srv", "max_age_s": 60}}"#.utf8),
                                            file: "config.json")
        #expect(config.allUpstreams[0].balance.sticky == StickyConfig(cookie: "srv", maxAgeS: 60))
        func error(_ json: String) -> String {
            do { _ = try ConfigLoader.parse(Array(json.utf8), file: "config.json"); return "loaded" } catch { return error.description }
        }
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "sticky": {"max_age_s": 60}}"#).contains("sticky.cookie: missing"))
        #expect(error(#"{"backends": [{"url": "http://a:1"}], "sticky": {"cookie": "a b"}}"#).contains("sticky.cookie: a cookie name is"))
    }

    @Test func slowStartRampsANewlyAvailableBackendsShare() {
        let s = 1_000_000_000 as UInt64
        // Off, or nobody ramping: the plain weights.
        #expect(SlowStart.weights([2, 1], availableSince: [0, 0], now: 100 * s, slowStartMs: 0) == [2, 1])
        #expect(SlowStart.weights([2, 1], availableSince: [0, 0], now: 100 * s, slowStartMs: 10_000) == [2, 1])
        // Backend 1 came back 2.5 s into a 10 s ramp: a quarter of its share (weights × 100).
        #expect(SlowStart.weights([2, 4], availableSince: [0, 100 * s], now: 102 * s + s / 2, slowStartMs: 10_000) == [200, 100])
        // Just back: the 10 % floor.
        #expect(SlowStart.weights([1, 1], availableSince: [0, 100 * s], now: 100 * s, slowStartMs: 10_000) == [100, 10])
        // Done.
        #expect(SlowStart.weights([1, 1], availableSince: [0, 100 * s], now: 111 * s, slowStartMs: 10_000) == [1, 1])
        // Back from an ejection counts as available again.
        let b = backends([1])
        #expect(b[0].shared.eject(nowNs: 5 * s, baseMs: 1000) != nil)
        #expect(b[0].shared.endEjection(nowNs: 7 * s))
        #expect(b[0].shared.availableSince == 7 * s)
        do {
            _ = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "balance": "maglev", "hash_key": "path", "slow_start_ms": 1000}"#.utf8),
                                       file: "config.json")
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains("slow_start_ms: slow start changes shares"), "\(error)")
        }
    }

    @Test func checkPrintsTheBalancingSettings() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1"}], "balance": "maglev", "hash_key": "cookie:sid",
             "retries": {"attempts": 2, "on": ["503", "reset"]}, "outlier_detection": {"consecutive_failures": 0},
             "max_connections_per_backend": 8, "queue": {"max": 5, "timeout_ms": 100}}
            """#.utf8), file: "config.json")
        #expect(config.allUpstreams[0].balance.summary == [
            "balance maglev on cookie:sid", "outlier detection: off",
            "retries: 2 on 503,reset, budget 20 % + 10/s per worker",
            "at most 8 requests per backend; queue 5, wait up to 100 ms"])
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
        #expect(HashKey.parse("header:a(b)") == .failure(HashKeyError("header:a(b)")))
        #expect(HashKey.parse("query:a&b") == .failure(HashKeyError("query:a&b")))
        #expect(error(#"{"upstreams": {"u": {"backends": [{"url": "http://a:1"}]}}, "balance": "random", "routes": [{"path": "/", "upstream": "u"}]}"#)
            .contains("balance: applies to the top-level \"backends\" (the default pool), and there are none"))

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
