import Testing
@testable import Proxy

struct RequestTargetTests {
    private func form(_ method: String, _ target: String) throws(HTTPParseError) -> (RequestTarget.Form, RequestHead) {
        var head = try HeadParser.parseRequest(Array("\(method) \(target) HTTP/1.1\r\nHost: h\r\n\r\n".utf8), limits: HeadLimits())
        return (try RequestTarget.validate(&head), head)
    }

    private func forwarded(_ target: String) throws -> String {
        let (f, head) = try form("GET", target)
        switch f {
        case .path(let r), .absolute(let r, _): return r.isEmpty ? "/" : head.bytes.string(r)
        case .asterisk: return "*"
        }
    }

    private func authority(_ target: String) throws -> String? {
        let (f, head) = try form("GET", target)
        guard case .absolute(_, let authority) = f else { return nil }
        return head.bytes.string(authority)
    }

    @Test func forwardsOriginFormByteExact() throws {
        #expect(try forwarded("/a/%2e%2e/b?x=../..") == "/a/%2e%2e/b?x=../..")
        #expect(try forwarded("/a/b/../c") == "/a/b/../c")
        #expect(try forwarded("//double//slash") == "//double//slash")
    }

    @Test func forwardsTheOriginFormPartOfAnAbsoluteTarget() throws {
        #expect(try forwarded("http://example.com/p?q=1") == "/p?q=1")
        #expect(try forwarded("HTTP://example.com:8080?q") == "?q")
        #expect(try forwarded("http://example.com") == "/")
        // https:// too: what clients send to a TLS listener.
        #expect(try forwarded("https://example.com/s?x") == "/s?x")
        #expect(try authority("HTTPS://example.com:8443/") == "example.com:8443")
    }

    @Test func anAbsoluteTargetCarriesItsAuthority() throws {
        #expect(try authority("http://Example.com:8080/p") == "Example.com:8080")
        #expect(try authority("http://[::1]:3000?q") == "[::1]:3000")
        #expect(try authority("/p") == nil)
    }

    @Test(arguments: ["http://user@host/", "http://user:pass@host/x", "http://@host/", "http://a@b@host/"])
    func refusesUserinfoInAnAbsoluteTarget(_ target: String) {
        #expect(throws: HTTPParseError(status: 400, reason: "userinfo (\"user@\") in the request target")) { try form("GET", target) }
    }

    @Test(arguments: ["http://a,b/", "http://[::1/", "http://h:99999/", "http://a..b/"])
    func refusesAnAbsoluteTargetWhoseHostIsNotAHost(_ target: String) {
        #expect(throws: HTTPParseError.self) { try form("GET", target) }
    }

    @Test func acceptsAsteriskOnlyForOptions() throws {
        #expect(try form("OPTIONS", "*").0 == .asterisk)
        #expect(throws: HTTPParseError.self) { try form("GET", "*") }
    }

    @Test(arguments: ["/..", "/a/../..", "/./../x", "/a/b/../../../etc/passwd", "http://h/../x"])
    func refusesDotSegmentsThatClimbAboveTheRoot(_ target: String) {
        #expect(throws: HTTPParseError(status: 400, reason: "request target climbs above \"/\" with \"..\"")) { try form("GET", target) }
    }

    @Test(arguments: ["example.com:443", "relative/path", "ftp://h/x", "http:///nohost", "https:///nohost", "httpx://h/"])
    func refusesOtherTargetForms(_ target: String) {
        #expect(throws: HTTPParseError.self) { try form("GET", target) }
    }
}
