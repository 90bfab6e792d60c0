import Testing
@testable import Proxy

/// The normal form routes are matched on (issue 12 §1.4).
struct PathNormalizerTests {
    /// Normalises `target` placed inside other bytes (so ranges are checked, not just contents);
    /// returns the normal path, the normal target and whether it was rewritten.
    private func normal(_ target: String, _ normalizer: PathNormalizer = PathNormalizer())
        throws(HTTPParseError) -> (path: String, target: String, rewritten: Bool) {
        var bytes = Array("GET \(target) HTTP/1.1\r\n\r\n".utf8)
        let range = 4..<(4 + target.utf8.count)
        let before = bytes
        let r = try normalizer.normalize(&bytes, target: range)
        #expect(Array(bytes[0..<before.count]) == before, "the original bytes are never modified")
        if !r.rewritten { #expect(bytes.count == before.count && r.target == range, "nothing appended for a normal path") }
        return (bytes.string(r.path), bytes.string(r.target), r.rewritten)
    }

    @Test(arguments: ["/", "/admin", "/a/b/c/", "/a.b/..c/c../...", "/a%20b/%C3%A9", "/a%2Fb", "/x?y=/../..//%zz", "", "?q=1",
                      "/a;b=c/d", "/.well-known/x", "/a%25b"])
    func alreadyNormalPathsAreLeftAsTheyAre(_ target: String) throws {
        let r = try normal(target)
        #expect(!r.rewritten && r.target == target)
    }

    @Test(arguments: [
        // Dot segments (RFC 3986 §5.2.4), including above the root.
        ("/public/../admin", "/admin"), ("/a/./b", "/a/b"), ("/a/b/..", "/a/"), ("/a/b/.", "/a/b/"), ("/..", "/"),
        ("/../admin", "/admin"), ("/a/b/../../../c", "/c"), ("/.", "/"), ("/a/..", "/"),
        // Merged slashes.
        ("//admin", "/admin"), ("/a//b///c", "/a/b/c"), ("/a//", "/a/"), ("//", "/"), ("/a//../b", "/b"),
        // Unreserved escapes decoded, others kept with upper-case hex.
        ("/%61dmin", "/admin"), ("/%41%7e%2D%5f%2e", "/A~-_."), ("/a%2fb", "/a%2Fb"), ("/%c3%a9", "/%C3%A9"),
        // Decoding first: an encoded dot segment is a dot segment.
        ("/%2e%2e/admin", "/admin"), ("/public/%2E%2E/admin", "/admin"), ("/a/.%2e/b", "/b"), ("/%2e/x", "/x"),
    ])
    func rewritesToTheNormalForm(_ raw: String, _ expected: String) throws {
        let r = try normal(raw)
        #expect(r.rewritten && r.path == expected)
    }

    @Test func theQueryIsNeverTouchedAndFollowsTheNormalPath() throws {
        let r = try normal("//a/../%62?x=/../%2e&y=%zz")
        #expect(r.path == "/b" && r.target == "/b?x=/../%2e&y=%zz")
    }

    @Test(arguments: ["/a%zz", "/a%4", "/%", "/a%g0/b", "/%%41"])
    func invalidPercentEncodingIsRefused(_ target: String) {
        #expect(throws: HTTPParseError(status: 400, reason: "invalid percent-encoding in the request path")) { try normal(target) }
    }

    @Test(arguments: ["/admin%00", "/%00/x", "/a%00.html"])
    func anEncodedNulIsRefused(_ target: String) {
        #expect(throws: HTTPParseError(status: 400, reason: "encoded NUL (%00) in the request path")) { try normal(target) }
    }

    @Test func mergingSlashesCanBeTurnedOff() throws {
        let keep = PathNormalizer(mergeSlashes: false)
        #expect(try normal("//admin", keep).rewritten == false)
        #expect(try normal("/a//b/", keep).target == "/a//b/")
        #expect(try normal("/a//../b", keep).path == "/a/b", "RFC 3986: '..' removes the empty segment")
        #expect(try normal("/x/%2e%2e//y", keep).path == "//y")
    }

    @Test func encodedSlashesAreKeptByDefaultInsideTheirSegment() throws {
        #expect(try normal("/public%2F..%2Fadmin").rewritten == false)
        #expect(try normal("/public%2f..%5cadmin").path == "/public%2F..%5Cadmin")
    }

    @Test func encodedSlashesCanBeRejected() {
        let reject = PathNormalizer(escapedSlashes: .reject)
        for target in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb"] {
            #expect(throws: HTTPParseError(status: 400, reason: "encoded slash (%2F) or backslash (%5C) in the request path")) {
                try normal(target, reject)
            }
        }
        #expect(throws: Never.self) { try normal("/a?b=%2F", reject) }
    }

    @Test func encodedSlashesCanBeDecodedIntoSeparators() throws {
        let decode = PathNormalizer(escapedSlashes: .decode)
        #expect(try normal("/public%2F..%2Fadmin", decode).path == "/admin")
        #expect(try normal("/public%5C..%5Cadmin", decode).path == "/admin", "a backslash counts as a slash, as in Envoy")
        #expect(try normal("/a%2F%2Fb", decode).path == "/a/b")
    }

    @Test func theScratchSpaceIsTheEndOfTheSameBufferAndIsReusedAcrossRequests() throws {
        var bytes = Array("GET /a/../b HTTP/1.1\r\n\r\n".utf8)
        let headLength = bytes.count
        let r = try PathNormalizer().normalize(&bytes, target: 4..<11)
        #expect(r.path == headLength..<(headLength + 2) && bytes.string(r.path) == "/b")
        // A connection reuses the array: emptied with its capacity, nothing is allocated next time.
        let capacity = bytes.capacity
        bytes.removeAll(keepingCapacity: true)
        bytes.append(contentsOf: "GET /a/../b HTTP/1.1\r\n\r\n".utf8)
        _ = try PathNormalizer().normalize(&bytes, target: 4..<11)
        #expect(bytes.capacity == capacity)
    }
}

/// `Host` and absolute-form authorities (issue 12 §1.5, §1.15).
struct HostSyntaxTests {
    private func check(_ host: String) throws(HTTPParseError) {
        let b = Array("x\(host)y".utf8)
        try RequestTarget.checkHost(b, 1..<(b.count - 1))
    }

    @Test(arguments: ["example.com", "Example.COM:8080", "localhost", "127.0.0.1:3000", "[::1]", "[::1]:8080",
                      "[2001:db8::7]", "[::ffff:192.0.2.1]:80", "admin.localhost.", "a_b-c~d", "h:0", "h:65535"])
    func acceptsNamesAddressesAndPorts(_ host: String) {
        #expect(throws: Never.self) { try check(host) }
    }

    @Test(arguments: [
        ("", "empty"), ("a/b", "a path is not allowed"), ("a b", "spaces are not allowed"), ("[::1", "unclosed \"[\""),
        ("x@host", "userinfo"), ("a.com,b.com", "a list of hosts"), ("a.com, b.com", "a list of hosts"),
        ("h:", "port"), ("h:65536", "port"), ("h:123456", "port"), ("h:8x", "port"), ("h:80:80", "port"),
        ("[v1.x]", "IPv6"), ("[1]", "IPv6"), ("[::1]x", "only letters"), (":80", "no host before the port"),
        ("a..b", "empty label"), (".a", "empty label"), (".", "empty label"), ("%61.com", "only letters"), ("a\\b", "a path"),
    ])
    func refusesAnythingElseWithAReason(_ host: String, _ reason: String) {
        refuse(host, reason)
    }

    /// Found by the hostile-client review: the characters of an IPv6 address are not enough.
    @Test(arguments: ["[1::2::3]", "[1:2:3:4:5:6:7:8:9]", "[1:2:3:4:5:6:7]", "[:::]", "[::::]", "[12345::]",
                      "[::1.2.3]", "[::256.1.1.1]", "[::01.2.3.4]", "[1:2:3:4:5:6:7:8::]", "[1:::2]", "[:1::2]", "[1::2:]"])
    func refusesMalformedIPv6Addresses(_ host: String) {
        refuse(host, "not an IPv6 address")
    }

    @Test(arguments: ["[::]", "[::1]", "[1::]", "[1:2:3:4:5:6:7:8]", "[1:2:3:4:5:6::8]", "[::ffff:1.2.3.4]",
                      "[1:2:3:4:5:6:1.2.3.4]", "[fe80::1:2]", "[ABCD::ef01]"])
    func acceptsWellFormedIPv6Addresses(_ host: String) {
        #expect(throws: Never.self) { try check(host) }
    }

    private func refuse(_ host: String, _ reason: String) {
        do throws(HTTPParseError) {
            try check(host)
            Issue.record("\(host) was accepted")
        } catch {
            #expect(error.status == 400 && error.reason.hasPrefix("invalid Host: ") && error.reason.contains(reason),
                    "\(host): \(error.reason)")
        }
    }
}

/// Matching on normal paths, authorities and host names without their trailing dot.
struct RouterMatchTests {
    private func router(_ routes: [RouteConfig]) -> Router {
        var config = ProxyConfig(backends: [BackendConfig(id: "b1", url: "http://127.0.0.1:1", host: "127.0.0.1", port: 1)])
        config.routes = routes
        return Router(config) { $0 == "default" ? 0 : 1 }
    }

    private func route(_ r: Router, host: String, path: String) -> String? {
        let head = try? HeadParser.parseRequest(Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\n\r\n".utf8), limits: HeadLimits())
        guard var head else { return nil }
        let normal = try? r.paths.normalize(&head.bytes, target: head.target)
        return normal.flatMap { r.match(head, path: $0.path) }?.description
    }

    @Test func rawBypassesOfAPathRouteMeetTheRoute() {
        let r = router([RouteConfig(path: "/admin", upstream: "admin")])
        for path in ["/admin", "/public/../admin", "//admin", "/%61dmin", "/%2e%2e/admin", "/admin/./x", "/x/..//admin/y"] {
            #expect(route(r, host: "h", path: path) == "host * path /admin", "\(path)")
        }
        #expect(route(r, host: "h", path: "/admin%2Fx") == "no route matched: the default pool", "%2F is kept inside its segment")
    }

    @Test func aTrailingDotInHostIsTheSameName() {
        let r = router([RouteConfig(host: .exact("admin.localhost"), upstream: "admin"),
                        RouteConfig(host: .wildcard(".dev.localhost"), upstream: "admin")])
        #expect(route(r, host: "admin.localhost.", path: "/") == "host admin.localhost path /")
        #expect(route(r, host: "ADMIN.localhost.:8080", path: "/") == "host admin.localhost path /")
        #expect(route(r, host: "x.dev.localhost.", path: "/") == "host *.dev.localhost path /")
        #expect(route(r, host: "admin.localhost.x", path: "/") == "no route matched: the default pool")
    }
}
