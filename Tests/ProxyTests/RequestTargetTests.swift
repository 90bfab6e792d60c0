import Testing
@testable import Proxy

struct RequestTargetTests {
    private func form(_ method: String, _ target: String) throws(HTTPParseError) -> (RequestTarget.Form, RequestHead) {
        var head = try HeadParser.parseRequest(Array("\(method) \(target) HTTP/1.1\r\nHost: h\r\n\r\n".utf8), limits: HeadLimits())
        return (try RequestTarget.validate(&head), head)
    }

    private func forwarded(_ target: String) throws -> String {
        let (f, head) = try form("GET", target)
        guard case .path(let r) = f else { return "*" }
        return r.isEmpty ? "/" : head.bytes.string(r)
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
    }

    @Test func acceptsAsteriskOnlyForOptions() throws {
        #expect(try form("OPTIONS", "*").0 == .asterisk)
        #expect(throws: HTTPParseError.self) { try form("GET", "*") }
    }

    @Test(arguments: ["/..", "/a/../..", "/./../x", "/a/b/../../../etc/passwd", "http://h/../x"])
    func refusesDotSegmentsThatClimbAboveTheRoot(_ target: String) {
        #expect(throws: HTTPParseError(status: 400, reason: "request target climbs above \"/\" with \"..\"")) { try form("GET", target) }
    }

    @Test(arguments: ["example.com:443", "relative/path", "ftp://h/x", "http:///nohost"])
    func refusesOtherTargetForms(_ target: String) {
        #expect(throws: HTTPParseError.self) { try form("GET", target) }
    }
}
