import Testing
@testable import Proxy

/// The decisions of static file serving that need no file (issue 17, part 4): HTTP dates,
/// conditional requests and ranges, path safety, media types and precompressed siblings.
struct StaticFileRulesTests {
    @Test func httpDatesAreWrittenAsIMFFixdateAndReadInAllThreeForms() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT", "a leap day")
        #expect(HTTPDate.format(4_102_444_800) == "Fri, 01 Jan 2100 00:00:00 GMT")
        for text in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            #expect(HTTPDate.parse(Array(text.utf8)[...]) == 784_111_777, "\(text)")
        }
        for seconds: Int64 in [0, 68_256_000, 951_868_799, 1_700_000_000, 4_102_444_799] {
            #expect(HTTPDate.parse(Array(HTTPDate.format(seconds).utf8)[...]) == seconds)
        }
        for bad in ["", "yesterday", "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
                    "Sun, 06 Nov 1994 08:49:37 PST", "1994-11-06T08:49:37Z"] {
            #expect(HTTPDate.parse(Array(bad.utf8)[...]) == nil, "\(bad)")
        }
    }

    @Test func conditionalsFollowRFC9110sOrder() {
        let file = ConditionalRequest.Validators(size: 1000, modifiedS: 784_111_777, modifiedNs: 784_111_777_000_000_123)
        let tag = file.etag
        #expect(tag.hasPrefix("\"3e8-") && tag.hasSuffix("\""))
        let date = "Sun, 06 Nov 1994 08:49:37 GMT", earlier = "Sun, 06 Nov 1994 08:49:36 GMT"
        #expect(ConditionalRequest().evaluate(file) == .full)
        #expect(ConditionalRequest(ifNoneMatch: tag).evaluate(file) == .notModified)
        #expect(ConditionalRequest(ifNoneMatch: "W/\(tag)").evaluate(file) == .notModified, "If-None-Match compares weakly")
        #expect(ConditionalRequest(ifNoneMatch: "\"other\", \(tag)").evaluate(file) == .notModified)
        #expect(ConditionalRequest(ifNoneMatch: "*").evaluate(file) == .notModified)
        #expect(ConditionalRequest(ifNoneMatch: "\"other\"").evaluate(file) == .full)
        #expect(ConditionalRequest(ifModifiedSince: date).evaluate(file) == .notModified)
        #expect(ConditionalRequest(ifModifiedSince: earlier).evaluate(file) == .full)
        #expect(ConditionalRequest(ifModifiedSince: "garbage").evaluate(file) == .full, "an invalid date is ignored")
        #expect(ConditionalRequest(ifNoneMatch: "\"other\"", ifModifiedSince: date).evaluate(file) == .full,
                "If-None-Match wins over If-Modified-Since")
        #expect(ConditionalRequest(ifMatch: "\"other\"").evaluate(file) == .preconditionFailed)
        #expect(ConditionalRequest(ifMatch: "W/\(tag)").evaluate(file) == .preconditionFailed, "If-Match compares strongly")
        #expect(ConditionalRequest(ifMatch: tag).evaluate(file) == .full)
        #expect(ConditionalRequest(ifUnmodifiedSince: earlier).evaluate(file) == .preconditionFailed)
        #expect(ConditionalRequest(ifUnmodifiedSince: date).evaluate(file) == .full)
    }

    @Test func oneByteRangeIsServedAndIfRangeGuardsIt() {
        let file = ConditionalRequest.Validators(size: 1000, modifiedS: 784_111_777, modifiedNs: 5)
        func range(_ r: String, ifRange: String? = nil, get: Bool = true) -> ConditionalRequest.Outcome {
            ConditionalRequest(isGET: get, range: r, ifRange: ifRange).evaluate(file)
        }
        #expect(range("bytes=0-99") == .partial(first: 0, last: 99))
        #expect(range("bytes=900-") == .partial(first: 900, last: 999))
        #expect(range("bytes=-100") == .partial(first: 900, last: 999))
        #expect(range("bytes=-5000") == .partial(first: 0, last: 999), "a suffix longer than the file is the file")
        #expect(range("bytes=990-2000") == .partial(first: 990, last: 999), "clipped to the end")
        #expect(range("bytes=1000-") == .rangeNotSatisfiable)
        #expect(range("bytes=-0") == .rangeNotSatisfiable)
        #expect(range("bytes=0-1,5-6") == .full, "several ranges: the whole file")
        #expect(range("bytes=5-1") == .full, "malformed: ignored")
        #expect(range("items=0-1") == .full)
        #expect(range("bytes=0-99", get: false) == .full, "HEAD: no range")
        #expect(range("bytes=0-99", ifRange: file.etag) == .partial(first: 0, last: 99))
        #expect(range("bytes=0-99", ifRange: "\"old\"") == .full, "the file changed: all of it")
        #expect(range("bytes=0-99", ifRange: "Sun, 06 Nov 1994 08:49:37 GMT") == .partial(first: 0, last: 99))
        #expect(range("bytes=0-99", ifRange: "Sun, 06 Nov 1994 08:49:38 GMT") == .full)
        let empty = ConditionalRequest.Validators(size: 0, modifiedS: 1, modifiedNs: 1)
        #expect(ConditionalRequest(range: "bytes=0-").evaluate(empty) == .rangeNotSatisfiable)
    }

    @Test func pathsAreDecodedAndHiddenOrSeparatorTricksRefused() {
        func resolve(_ p: String) -> StaticFilePath.Decision { StaticFilePath.resolve(Array(p.utf8)[...]) }
        #expect(resolve("/") == .file(""))
        #expect(resolve("/assets/app.js") == .file("assets/app.js"))
        #expect(resolve("/a%20b/%C3%A9.txt") == .file("a b/é.txt"))
        #expect(resolve("/docs/") == .file("docs"))
        #expect(resolve("/.well-known/security.txt") == .file(".well-known/security.txt"))
        for bad in ["/.git/config", "/.env", "/a/.hidden", "/%2e%2e/etc/passwd", "/a%2Fb", "/a%5Cb", "/a%00b", "/a\\b", "/%zz", "/%4"] {
            if case .file(let f) = resolve(bad) { Issue.record("\(bad) resolved to \(f)") }
        }
        #expect(resolve("/" + String(repeating: "a", count: 5000)) == .refused("the path is too long"))
    }

    @Test func mediaTypesAndPrecompressedSiblings() {
        #expect(MediaTypes.type(forPath: "index.html") == "text/html; charset=utf-8")
        #expect(MediaTypes.type(forPath: "assets/App.JS") == "text/javascript; charset=utf-8")
        #expect(MediaTypes.type(forPath: "logo.svg") == "image/svg+xml")
        #expect(MediaTypes.type(forPath: "LICENSE") == "application/octet-stream")
        #expect(MediaTypes.type(forPath: "a.b/file") == "application/octet-stream")
        func choice(_ fields: String...) -> [String] {
            let text = "GET / HTTP/1.1\r\nHost: a\r\n" + fields.map { "Accept-Encoding: \($0)\r\n" }.joined() + "\r\n"
            let head = try! HeadParser.parseRequest(Array(text.utf8), limits: HeadLimits(maxHeadBytes: 8192, maxTargetBytes: 8192, maxHeaderCount: 64))
            return PrecompressedChoice.candidates(AcceptedCodings(head)).map(\.coding)
        }
        #expect(choice("gzip, deflate, br") == ["br", "gzip"])
        #expect(choice("gzip;q=1, br;q=0") == ["gzip"])
        #expect(choice("*") == ["br", "gzip"])
        #expect(choice("*, gzip;q=0") == ["br"])
        #expect(choice("gzip;q=0.000, br;q=0.001") == ["br"])
        #expect(choice("GZIP ; Q=0.5", "x-gzip") == ["gzip"])
        #expect(choice("br;level=5;q=0", "*;q=0.1") == ["gzip"])
        #expect(choice("identity;, br;q=0, *") == ["gzip"])
        #expect(choice("gzip;q=0;,br") == ["br"])
        #expect(choice("br;, gzip") == ["br", "gzip"])
        #expect(choice("gzip;;q=0").isEmpty)
        #expect(choice("identity").isEmpty)
        #expect(choice("identity;q=1, *;q=0").isEmpty)
        #expect(choice().isEmpty)
    }
}
