import Foundation
import Testing
@testable import Proxy

/// A route's policy (issue 16, first part): address ranges, the merge of route keys over the
/// top-level `policy`, and the config errors. No sockets (`PolicyIntegrationTests` has them).
struct RoutePolicyTests {
    private func range(_ text: String) -> AddressRange { try! AddressRange.parse(text).get() }
    private func bytes(_ ip: String) -> ArraySlice<UInt8> { SocketAddress(ip: ip, port: 1)!.addressBytes[...] }

    @Test func rangesHoldTheirAddressesOnly() {
        #expect(range("10.0.0.0/8").contains(bytes("10.255.1.2")))
        #expect(!range("10.0.0.0/8").contains(bytes("11.0.0.1")))
        #expect(range("10.1.2.3/8").network == [10, 0, 0, 0], "host bits cleared")
        #expect(range("192.168.1.0/23").contains(bytes("192.168.0.7")))
        #expect(!range("192.168.1.0/23").contains(bytes("192.168.2.7")))
        #expect(range("127.0.0.1").contains(bytes("127.0.0.1")) && !range("127.0.0.1").contains(bytes("127.0.0.2")))
        #expect(range("0.0.0.0/0").contains(bytes("203.0.113.9")))
        #expect(range("fd00::/8").contains(bytes("fd12::1")) && !range("fd00::/8").contains(bytes("fe80::1")))
        #expect(range("::1").contains(bytes("::1")))
        #expect(!range("::/0").contains(bytes("10.0.0.1")), "families do not mix")
        #expect(range("10.0.0.0/8").contains(bytes("::ffff:10.9.8.7")), "an IPv4-mapped client is its IPv4 address")
        #expect(!range("10.0.0.0/8").contains(bytes("::ffff:11.9.8.7")))
        #expect(!range("::/0").contains(bytes("::ffff:10.9.8.7")), "a mapped client is IPv4, not in an IPv6 range")
        #expect(range("::ffff:10.0.0.0/104").contains(bytes("10.1.2.3")) && range("::ffff:10.0.0.0/104").network == [10, 0, 0, 0],
                "a mapped range is the IPv4 range it spells")
        let denyOnly = RoutePolicy({ var p = PolicyConfig(); p.deny = [range("10.0.0.0/8")]; return p }())
        #expect(!denyOnly.admits([]), "an unknown client address is refused by a deny list too")
        #expect(RoutePolicy(PolicyConfig()).admits([]))
        for bad in ["10.0.0.0/33", "10.0.0.0/", "example.com", "10.0.0/8", "::1/129", "10.0.0.0/-1", ""] {
            if case .success = AddressRange.parse(bad) { Issue.record("\(bad) parsed") }
        }
    }

    @Test func routeKeysReplaceTopLevelKeysOneByOne() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://127.0.0.1:1"}],
             "policy": {"deny": ["192.0.2.0/24"], "allowed_methods": ["GET"], "max_body_bytes": 10},
             "routes": [{"path": "/upload", "upstream": "default", "allowed_methods": ["GET", "POST"], "max_body_bytes": 0},
                        {"path": "/admin", "upstream": "default", "allow": ["10.0.0.0/8"]}]}
            """#.utf8), file: "config.json")
        let upload = config.routes[0].policy.merged(over: config.policy)
        #expect(upload.allowedMethods == ["GET", "POST"] && upload.maxBodyBytes == 0 && upload.deny?.map(\.description) == ["192.0.2.0/24"])
        let admin = RoutePolicy(config.routes[1].policy.merged(over: config.policy))
        #expect(!admin.admits(bytes("127.0.0.1")) && admin.admits(bytes("10.0.0.1")) && !admin.admits(bytes("192.0.2.1")) == true)
        #expect(admin.allowField == "GET, HEAD" && admin.maxBodyBytes == 10)
        let head = Array("HEAD".utf8)
        #expect(admin.accepts(method: 0..<4, in: head), "GET brings HEAD")
        #expect(RoutePolicy(PolicyConfig()).isEmpty)
        let denyWins = RoutePolicy(try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "policy": {"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]}}"#.utf8), file: "c.json").policy)
        #expect(!denyWins.admits(bytes("10.1.2.3")) && denyWins.admits(bytes("10.2.0.1")))
    }

    @Test func policyMistakesNameTheField() {
        for (json, expected) in [
            (#"{"policy": {"allow": ["10.0.0.0/33"]}}"#, "policy.allow[0]: \"10.0.0.0/33\": the prefix length must be 0 to 32"),
            (#"{"policy": {"deny": "10.0.0.0/8"}}"#, "policy.deny: expected a list of addresses or CIDR ranges"),
            (#"{"policy": {"alow": []}}"#, "policy.alow: unknown key"),
            (#"{"routes": [{"upstream": "default", "allow": ["intranet"]}], "backends": [{"url": "http://a:1"}]}"#,
             "routes[0].allow[0]: \"intranet\" is not an IP address or CIDR range"),
            (#"{"routes": [{"upstream": "default", "max_body_bytes": -1}], "backends": [{"url": "http://a:1"}]}"#,
             "routes[0].max_body_bytes: must be at least 0"),
            (#"{"policy": {"request_headers": {"set": {"X-Forwarded-For": "1.2.3.4"}}}}"#,
             "policy.request_headers.set.X-Forwarded-For: X-Forwarded-For cannot be changed here: the proxy sets it"),
            (#"{"policy": {"request_headers": {"remove": ["Host"]}}}"#, "Host cannot be changed here: use the route's \"host_header\""),
            (#"{"policy": {"response_headers": {"set": {"Content-Length": "1"}}}}"#, "the proxy frames each hop itself"),
            (#"{"policy": {"response_headers": {"set": {"X-A": "{client}"}}}}"#, "unknown placeholder {client}; use {client_ip}, {request_id}, {host}"),
            (#"{"policy": {"response_headers": {"set": {"Bad Name": "x"}}}}"#, "\"Bad Name\" is not a header field name"),
            (#"{"policy": {"response_headers": {"add": {}}}}"#, "unknown key; expected \"set\" or \"remove\""),
            (#"{"policy": {"security_headers": "yes"}}"#, "policy.security_headers: expected true or false"),
            (#"{"policy": {"cors": {"origins": ["*"], "credentials": true}}}"#, "policy.cors.origins: \"*\" cannot be used with \"credentials\": true"),
            (#"{"policy": {"cors": {"origins": ["https://App.example/"]}}}"#, "policy.cors.origins[0]: expected an origin as browsers send it"),
            (#"{"policy": {"cors": {"methods": ["GET"]}}}"#, "policy.cors.origins: missing"),
            (#"{"policy": {"response_headers": {"set": {"X-A": " padded"}}}}"#, "cannot start or end with a space or tab"),
            (#"{"policy": {"response_headers": {"set": {"Strict-Transport-Security": "max-age=1"}}}}"#, "use the listener's \"hsts\""),
            (#"{"backends": [{"url": "http://a:1"}], "policy": {"cors": {"origins": ["https://a.example"]}}, "routes": [{"upstream": "default", "response_headers": {"remove": ["Access-Control-Allow-Origin"]}}]}"#,
             "routes[0].response_headers: Access-Control-Allow-Origin is set by the route's \"cors\""),
            (#"{"policy": {"allowed_methods": ["get"]}}"#, "methods are case-sensitive: \"get\" matches no client's GET; write \"GET\""),
            (#"{"policy": {"cors": {"origins": ["https://a.example"], "methods": ["put"]}}}"#, "methods are case-sensitive"),
            (#"{"trusted_proxies": ["lb.internal"]}"#, "trusted_proxies[0]: \"lb.internal\" is not an IP address or CIDR range"),
            (#"{"policy": {"cors": {"origins": ["*", "https://a.example"]}}}"#, "\"*\" stands alone"),
        ] {
            do {
                _ = try ConfigLoader.parse(Array(json.utf8), file: "config.json")
                Issue.record("loaded \(json)")
            } catch {
                #expect(error.description.contains(expected), "\(error)")
            }
        }
    }

    @Test func aRouteTurnsAnInheritedCORSOff() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1"}], "policy": {"cors": {"origins": ["https://a.example"]}},
             "routes": [{"path": "/internal", "upstream": "default", "cors": false}, {"path": "/", "upstream": "default"}]}
            """#.utf8), file: "c.json")
        #expect(RoutePolicy(config.routes[0].policy.merged(over: config.policy)).cors == nil)
        #expect(RoutePolicy(config.routes[0].policy.merged(over: config.policy)).isEmpty)
        #expect(RoutePolicy(config.routes[1].policy.merged(over: config.policy)).cors != nil)
    }

    @Test func headerRulesFillPlaceholdersAndDropTheFieldsTheyReplace() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1"}],
             "policy": {"request_headers": {"set": {"X-Who": "{client_ip} via {host} ({request_id})"}, "remove": ["x-debug"]}}}
            """#.utf8), file: "c.json")
        let rules = try #require(RoutePolicy(config.policy).requestHeaders)
        let head = Array("X-DEBUG: 1\r\nx-who: me\r\nX-Other: 2".utf8)
        #expect(rules.drops(head, 0..<7) && rules.drops(head, 12..<17) && !rules.drops(head, 23..<30))
        var out = ByteBuffer(capacity: 64)
        rules.append(into: &out, .init(clientIP: Array("10.0.0.1".utf8), requestID: Array("r1".utf8), host: Array("shop".utf8)[...]))
        #expect(String(decoding: out.array, as: UTF8.self) == "X-Who: 10.0.0.1 via shop (r1)\r\n")
        #expect(RoutePolicy(config.policy).refusesNothing && !RoutePolicy(config.policy).isEmpty)
    }

    @Test func gcraLetsABurstThroughThenOneEveryInterval() {
        var config = RateLimitConfig()
        config.rate = 10  // one every 100 ms
        config.burst = 2
        let limiter = RateLimiter(config)
        let ms: UInt64 = 1_000_000
        let t0: UInt64 = 1_000 * ms
        #expect((0..<3).allSatisfy { _ in limiter.admit(key: 7, now: t0).allowed }, "burst + 1 at once")
        let refused = limiter.admit(key: 7, now: t0)
        #expect(!refused.allowed && refused.waitNs == 100 * ms, "\(refused)")
        #expect(limiter.admit(key: 8, now: t0).allowed, "another key has its own bucket")
        #expect(!limiter.admit(key: 7, now: t0 + 99 * ms).allowed)
        #expect(limiter.admit(key: 7, now: t0 + 100 * ms).allowed)
        #expect(!limiter.admit(key: 7, now: t0 + 100 * ms).allowed, "refusals do not use up the bucket, and one per interval")
        let rested = limiter.admit(key: 7, now: t0 + 10_000 * ms)
        #expect(rested.allowed && rested.remaining == 2, "a rested key has its burst again: \(rested)")
    }

    @Test func aFloodOfDistinctKeysDoesNotGrowTheTable() {
        var config = RateLimitConfig()
        config.rate = 1
        config.perMs = 3_600_000
        config.maxKeys = 16
        let limiter = RateLimiter(config)
        for k in 1...10_000 { _ = limiter.admit(key: UInt64(k) &* 0x9E37_79B9_7F4A_7C15, now: 5_000_000_000) }
        #expect(limiter.capacity == 16)
        // Forgotten keys start afresh (lenient), remembered ones are still limited.
        let recent = UInt64(10_000) &* 0x9E37_79B9_7F4A_7C15
        #expect(!limiter.admit(key: recent, now: 5_000_000_000).allowed)
    }

    @Test func rateLimitConfigIsCheckedField() throws {
        let config = try ConfigLoader.parse(Array(#"""
            {"backends": [{"url": "http://a:1"}], "policy": {"rate_limit": {"key": "header:X-User", "rate": 100, "per": "1m", "burst": 10}}}
            """#.utf8), file: "c.json")
        #expect(config.policy.rateLimit?.key == .header("x-user") && config.policy.rateLimit?.perMs == 60_000)
        for (json, expected) in [
            (#"{"policy": {"rate_limit": {"rate": 10, "per": "1 minute"}}}"#, "policy.rate_limit.per: expected a duration like"),
            (#"{"policy": {"rate_limit": {"per": "1s"}}}"#, "policy.rate_limit.rate: missing"),
            (#"{"policy": {"rate_limit": {"rate": 10, "scope": "process"}}}"#, "expected \"worker\" (each worker loop counts alone), \"proxy\" (all loops of this process) or \"global\""),
            (#"{"backends": [{"url": "http://a:1"}], "policy": {"rate_limit": {"rate": 10, "key": "jwt:sub"}}}"#, "policy.rate_limit.key: a \"jwt:\" key counts by a claim of the token"),
            (#"{"policy": {"rate_limit": {"rate": 10, "key": "ip"}}}"#, "expected \"client_ip\", \"header:NAME\", \"jwt:CLAIM\" or \"route\""),
            (#"{"policy": {"rate_limit": {"rate": 1, "per": "24h", "burst": 1000000}}}"#, "policy.rate_limit.burst: the burst would span more than a day"),
            (#"{"policy": {"rate_limit": {"rate": 1000000000, "per": "1ms"}}}"#, "policy.rate_limit.rate: at most 1,000,000 requests a second"),
        ] {
            do {
                _ = try ConfigLoader.parse(Array(json.utf8), file: "config.json")
                Issue.record("loaded \(json)")
            } catch {
                #expect(error.description.contains(expected), "\(error)")
            }
        }
    }

    @Test func bucketsSurviveARebuildThatLeavesTheLimitAloneAndThePolicyFieldIsInWholeSeconds() throws {
        func config(_ rate: Int) throws -> ProxyConfig {
            try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "policy": {"rate_limit": {"rate": \#(rate), "per": "500ms"}}, "routes": [{"path": "/x", "upstream": "default"}]}"#.utf8), file: "c.json")
        }
        let first = Router(try config(10)) { _ in 0 }
        let same = Router(try config(10), previous: first) { _ in 0 }
        let changed = Router(try config(20), previous: first) { _ in 0 }
        #expect(first.routes.count == 2 && first.routes.allSatisfy { $0.rateLimiter != nil })
        #expect(zip(first.routes, same.routes).allSatisfy { $0.rateLimiter === $1.rateLimiter }, "kept")
        #expect(zip(first.routes, changed.routes).allSatisfy { $0.rateLimiter !== $1.rateLimiter }, "a new limit starts afresh")
        #expect(first.routes[0].rateLimiter?.policyField == "\"route\";q=20;w=1", "10 per 500 ms is 20 per second")
        var slow = RateLimitConfig()
        slow.rate = 3
        slow.perMs = 1500
        #expect(RateLimiter(slow).policyField == "\"route\";q=4;w=2", "3 per 1.5 s: 4 per 2 s, rounded down")
    }

    @Test func aProxyScopeTableIsSharedByEveryWorkerAndExactUnderRaces() async {
        var config = RateLimitConfig()
        config.rate = 1
        config.perMs = 3_600_000
        config.burst = 999
        config.scope = .proxy
        let limit = config
        let table = SharedRateLimitTable(config)
        // Two workers' limiters over one table: one bucket.
        let a = RateLimiter(config, shared: table), b = RateLimiter(config, shared: table)
        let t0: UInt64 = 7_000_000_000
        #expect(a.admit(key: 5, now: t0).remaining == 999)
        #expect(b.admit(key: 5, now: t0).remaining == 998, "the other worker sees the first one's request")
        // Four threads, 500 requests each, at the same instant on one key: exactly burst + 1 = 1000
        // go through however the compare-and-swaps interleave (the two above included).
        let allowed = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let limiter = RateLimiter(limit, shared: table)
                    var n = 0
                    for _ in 0..<500 where limiter.admit(key: 5, now: t0).allowed { n += 1 }
                    return n
                }
            }
            return await group.reduce(0, +)
        }
        #expect(allowed == 998, "\(allowed) of 2000 let through")
        // Distinct keys from several threads: the table stays at its size, each key limited.
        let small: RateLimitConfig = { var c = config; c.maxKeys = 64; c.burst = 0; return c }()
        let bounded = SharedRateLimitTable(small)
        await withTaskGroup(of: Void.self) { group in
            for thread in 0..<4 {
                group.addTask {
                    let limiter = RateLimiter(small, shared: bounded)
                    for k in 1...5_000 { _ = limiter.admit(key: UInt64(thread * 10_000 + k) &* 0x9E37_79B9_7F4A_7C15, now: t0) }
                }
            }
        }
        #expect(bounded.capacity == 64)
        let fresh = RateLimiter(small, shared: bounded)
        #expect(fresh.admit(key: 42, now: t0).allowed && !fresh.admit(key: 42, now: t0).allowed)
    }

    @Test func aProxyScopeTableIsKeptByGenerationsThatKeepTheLimit() throws {
        func generation(_ rate: Int, previous: ConfigGeneration? = nil) throws -> ConfigGeneration {
            let config = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "routes": [{"path": "/x", "upstream": "default", "rate_limit": {"rate": \#(rate), "scope": "proxy"}}, {"path": "/y", "upstream": "default"}]}"#.utf8), file: "c.json")
            return ConfigGeneration(number: 1, config: config, backends: [], upstreams: [], previous: previous)
        }
        let first = try generation(10)
        #expect(first.sharedRateLimits.count == 3 && first.sharedRateLimits[0] != nil && first.sharedRateLimits[1] == nil && first.sharedRateLimits[2] == nil)
        #expect(try generation(10, previous: first).sharedRateLimits[0] === first.sharedRateLimits[0])
        #expect(try generation(20, previous: first).sharedRateLimits[0] !== first.sharedRateLimits[0])
        let router = Router(first.config, sharedRateLimits: first.sharedRateLimits) { _ in 0 }
        #expect(router.routes[0].rateLimiter?.shared === first.sharedRateLimits[0])
    }

    @Test func globalLimitConfigErrors() throws {
        for (json, expected) in [
            (#"{"backends": [{"url": "http://a:1"}], "policy": {"rate_limit": {"rate": 10, "scope": "global"}}}"#,
             "policy.rate_limit.scope: \"global\" counts in Redis: add a top-level \"redis\""),
            (#"{"backends": [{"url": "http://a:1"}], "redis": {"url": "http://x"}}"#, "redis.url: the scheme must be redis://"),
            (#"{"backends": [{"url": "http://a:1"}], "redis": {"url": "redis://h:0"}}"#, "the port must be a number"),
            (#"{"backends": [{"url": "http://a:1"}], "redis": {"url": "redis://h", "on_error": "open"}}"#, "redis.on_error: expected \"allow\""),
        ] {
            do {
                _ = try ConfigLoader.parse(Array(json.utf8), file: "config.json")
                Issue.record("loaded \(json)")
            } catch {
                #expect(error.description.contains(expected), "\(error)")
            }
        }
        let parsed = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "redis": {"url": "redis://user:pw@[::1]:7000/2"}}"#.utf8), file: "c.json")
        #expect(parsed.redis?.host == "::1" && parsed.redis?.port == 7000 && parsed.redis?.username == "user"
                && parsed.redis?.password == "pw" && parsed.redis?.database == 2)
        let escaped = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "redis": {"url": "redis://:p%40ss%3Aw%2Frd@h"}}"#.utf8), file: "c.json")
        #expect(escaped.redis?.password == "p@ss:w/rd" && escaped.redis?.username == nil && escaped.redis?.host == "h")
        do {
            _ = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://a:1"}], "redis": {"url": "redis://:secret%zz@h:0"}}"#.utf8), file: "c.json")
            Issue.record("loaded a malformed escape")
        } catch {
            #expect(error.description.contains("malformed %-escape") && !error.description.contains("secret"), "\(error)")
        }
        // A reload that changes only these is a change (it used to read as "no changes").
        let before = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://127.0.0.1:1"}], "redis": {"url": "redis://h", "on_error": "allow"}}"#.utf8), file: "c.json")
        for after in [#"{"backends": [{"url": "http://127.0.0.1:1"}], "redis": {"url": "redis://h", "on_error": "deny"}}"#,
                      #"{"backends": [{"url": "http://127.0.0.1:1"}], "redis": {"url": "redis://h"}, "trusted_proxies": ["10.0.0.0/8"]}"#,
                      #"{"backends": [{"url": "http://127.0.0.1:1"}], "redis": {"url": "redis://h"}, "policy": {"security_headers": true}}"#,
                      #"{"listen": [{"address": ":8080", "proxy_protocol": true}], "backends": [{"url": "http://127.0.0.1:1"}], "redis": {"url": "redis://h"}}"#] {
            let next = try ConfigLoader.parse(Array(after.utf8), file: "c.json")
            #expect(!ConfigChanges(from: before, oldBackends: [], to: next, newBackends: []).isEmpty, "\(after)")
        }
    }
}
