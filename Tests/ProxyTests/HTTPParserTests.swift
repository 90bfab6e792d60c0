import Testing
@testable import Proxy

private extension Array where Element == UInt8 {
    /// `withUnsafeBytes` with a typed error: the standard one only rethrows `any Error`.
    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws(HTTPParseError) -> R) throws(HTTPParseError) -> R {
        try withUnsafeBufferPointer { (buf) throws(HTTPParseError) -> R in try body(UnsafeRawBufferPointer(buf)) }
    }
}

// Wire bytes in, parsed head or error out (DESIGN.md §4 and §5).

// MARK: - Helpers

/// Feeds `raw` to a request `HeadAccumulator` in pieces of `step` bytes (all at once when nil) and
/// parses the completed head. Returns the head and how many bytes the accumulator consumed.
private func accumulate(_ raw: [UInt8], limits: HeadLimits = HeadLimits(), isRequest: Bool = true,
                        step: Int? = nil) throws(HTTPParseError) -> (bytes: [UInt8], consumed: Int) {
    var accumulator = HeadAccumulator(limits: limits, isRequest: isRequest)
    var offset = 0
    while offset < raw.count && !accumulator.isComplete {
        let n = min(step ?? raw.count, raw.count - offset)
        let used = try raw.withRawBytes { (all) throws(HTTPParseError) -> Int in
            try accumulator.append(UnsafeRawBufferPointer(rebasing: all[offset..<(offset + n)]))
        }
        offset += used
        if used < n { break }
    }
    guard accumulator.isComplete else { throw HTTPParseError(status: 0, reason: "incomplete head") }
    return (accumulator.bytes, offset)
}

/// Accumulates and parses a request given as wire bytes.
private func parse(_ raw: [UInt8], limits: HeadLimits = HeadLimits(), step: Int? = nil) throws(HTTPParseError) -> RequestHead {
    let (bytes, _) = try accumulate(raw, limits: limits, step: step)
    return try HeadParser.parseRequest(bytes, limits: limits)
}

private func parse(_ s: String, limits: HeadLimits = HeadLimits(), step: Int? = nil) throws(HTTPParseError) -> RequestHead {
    try parse(Array(s.utf8), limits: limits, step: step)
}

/// The error a request is rejected with, or nil when it parses.
private func rejection(_ raw: [UInt8], limits: HeadLimits = HeadLimits()) -> HTTPParseError? {
    do {
        _ = try parse(raw, limits: limits)
        return nil
    } catch {
        return error
    }
}

private func rejection(_ s: String, limits: HeadLimits = HeadLimits()) -> HTTPParseError? {
    rejection(Array(s.utf8), limits: limits)
}

/// Accumulates and parses a response.
private func parseResponse(_ s: String, requestWasHEAD: Bool = false) throws(HTTPParseError) -> ResponseHead {
    let (bytes, _) = try accumulate(Array(s.utf8), isRequest: false)
    return try HeadParser.parseResponse(bytes, requestWasHEAD: requestWasHEAD)
}

private func responseRejection(_ s: String) -> HTTPParseError? {
    do {
        _ = try parseResponse(s)
        return nil
    } catch {
        return error
    }
}

/// A request head with `field` inserted after a Host header.
private func request(with field: String, version: String = "HTTP/1.1") -> String {
    "POST /upload \(version)\r\nHost: example.com\r\n\(field)\r\n\r\n"
}

// MARK: - Byte classes

struct HTTPByteClassTests {
    @Test func byteClassTableMatchesTheRFCDefinitions() {
        let tchars = Set(Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8))
        let hex = Set(Array("0123456789abcdefABCDEF".utf8))
        #expect(httpByteClass.count == 256)
        for b in 0...255 {
            let c = httpByteClass[b]
            let byte = UInt8(b)
            #expect((c & HTTPByteClass.tchar != 0) == tchars.contains(byte), "tchar \(b)")
            #expect((c & HTTPByteClass.fieldValue != 0) == (b == 9 || b == 32 || (0x21...0x7E).contains(b) || b >= 0x80), "value \(b)")
            #expect((c & HTTPByteClass.target != 0) == (0x21...0x7E).contains(b), "target \(b)")
            #expect((c & HTTPByteClass.digit != 0) == (0x30...0x39).contains(b), "digit \(b)")
            #expect((c & HTTPByteClass.hexDigit != 0) == hex.contains(byte), "hex \(b)")
            #expect((c & HTTPByteClass.whitespace != 0) == (b == 9 || b == 32), "ows \(b)")
            let qd = b == 9 || b == 32 || b == 0x21 || (0x23...0x5B).contains(b) || (0x5D...0x7E).contains(b) || b >= 0x80
            #expect((c & HTTPByteClass.qdtext != 0) == qd, "qdtext \(b)")
        }
    }
}

// MARK: - Valid requests

struct HTTPRequestParsingTests {
    @Test func parsesASimpleGetRequest() throws {
        let head = try parse("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
        #expect(head.methodString == "GET")
        #expect(head.targetString == "/index.html?q=1")
        #expect(head.versionMinor == 1)
        #expect(head.fields.count == 2)
        #expect(head.bytes.string(head.fields[1].name) == "Accept")
        #expect(head.value(of: "accept") == "*/*")
        #expect(head.hostField == 0)
        #expect(head.value(of: "host") == "example.com")
        #expect(head.framing == .none)
        #expect(head.keepAlive)
        #expect(!head.expectsContinue)
        #expect(head.isIdempotent)
        #expect(!head.isHEAD)
    }

    @Test func skipsLeadingEmptyLinesBeforeTheRequestLine() throws {
        let head = try parse("\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(head.methodString == "GET")
        #expect(head.bytes.first == UInt8(ascii: "G"), "leading empty lines are not kept")
    }

    @Test func acceptsBareLFLineEndsInTheHead() throws {
        let head = try parse("GET / HTTP/1.1\nHost: a\nX-One: 1\n\n")
        #expect(head.fields.count == 2)
        #expect(head.value(of: "x-one") == "1")
    }

    @Test func acceptsMixedLineEndsInTheHead() throws {
        let head = try parse("GET / HTTP/1.1\r\nHost: a\nX-One: 1\r\n\n")
        #expect(head.value(of: "x-one") == "1")
        #expect(try parse("GET / HTTP/1.1\r\nHost: a\n\r\n").fields.count == 1)
    }

    @Test func trimsOptionalWhitespaceAroundFieldValues() throws {
        let head = try parse("GET / HTTP/1.1\r\nHost: \t example.com \t \r\nX-Inner: a  b\r\nX-Empty:\r\nX-Blank:   \r\n\r\n")
        #expect(head.value(of: "host") == "example.com")
        #expect(head.value(of: "x-inner") == "a  b", "inner whitespace is kept")
        #expect(head.value(of: "x-empty") == "")
        #expect(head.value(of: "x-blank") == "")
    }

    @Test func acceptsObsTextInFieldValues() throws {
        var raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf".utf8)
        raw += [0xC3, 0xA9, 0x80, 0xFF]
        raw += Array("\r\n\r\n".utf8)
        let head = try parse(raw)
        let field = head.fields[1]
        #expect(Array(head.bytes[field.value].suffix(4)) == [0xC3, 0xA9, 0x80, 0xFF])
    }

    @Test func preservesFieldNameCaseAndMatchesCaseInsensitively() throws {
        let head = try parse("GET / HTTP/1.1\r\nhOsT: a\r\nCONTENT-length: 3\r\n\r\n")
        #expect(head.bytes.string(head.fields[0].name) == "hOsT")
        #expect(head.hostField == 0)
        #expect(head.framing == .contentLength(3))
    }

    @Test func mergesIdenticalDuplicateContentLengths() throws {
        #expect(try parse(request(with: "Content-Length: 5\r\nContent-Length: 5")).framing == .contentLength(5))
        #expect(try parse(request(with: "Content-Length: 5, 5")).framing == .contentLength(5))
        #expect(try parse(request(with: "Content-Length: 5 ,5")).framing == .contentLength(5))
    }

    @Test func treatsContentLengthZeroAsNoBody() throws {
        #expect(try parse(request(with: "Content-Length: 0")).framing == .none)
        #expect(try parse(request(with: "Content-Length: 000")).framing == .none)
    }

    @Test func acceptsTheLargestContentLength() throws {
        #expect(try parse(request(with: "Content-Length: 9223372036854775807")).framing == .contentLength(UInt64(Int64.max)))
        #expect(try parse(request(with: "Content-Length: 0000000000000000001")).framing == .contentLength(1))
    }

    @Test func parsesChunkedTransferEncoding() throws {
        #expect(try parse(request(with: "Transfer-Encoding: chunked")).framing == .chunked)
        #expect(try parse(request(with: "Transfer-Encoding: Chunked")).framing == .chunked)
        #expect(try parse(request(with: "transfer-encoding:   chunked  ")).framing == .chunked)
    }

    @Test func defaultsToNoBodyWithoutLengthHeaders() throws {
        #expect(try parse("POST / HTTP/1.1\r\nHost: a\r\n\r\n").framing == .none)
    }

    @Test func keepsHTTP11ConnectionsAliveUnlessTheClientSaysClose() throws {
        #expect(try parse(request(with: "Connection: keep-alive")).keepAlive)
        #expect(try !parse(request(with: "Connection: close")).keepAlive)
        #expect(try !parse(request(with: "Connection: Keep-Alive, CLOSE")).keepAlive)
        #expect(try !parse(request(with: "Connection: upgrade\r\nConnection: close")).keepAlive)
        #expect(try parse(request(with: "Connection: closed, x-close")).keepAlive, "only the exact token counts")
    }

    @Test func keepsHTTP10ConnectionsAliveOnlyWithKeepAlive() throws {
        let plain = try parse("GET / HTTP/1.0\r\n\r\n")
        #expect(plain.versionMinor == 0)
        #expect(!plain.keepAlive)
        #expect(plain.hostField == nil, "HTTP/1.0 needs no Host")
        #expect(try parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive)
        #expect(try parse("GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n").keepAlive)
        #expect(try !parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keepAlive)
    }

    @Test func recognisesExpect100ContinueOnHTTP11Only() throws {
        #expect(try parse(request(with: "Expect: 100-Continue\r\nContent-Length: 3")).expectsContinue)
        #expect(try !parse(request(with: "Expect: 100-continue", version: "HTTP/1.0")).expectsContinue)
        #expect(try !parse(request(with: "Expect: something-else")).expectsContinue)
    }

    @Test func recordsTheHostFieldIndex() throws {
        let head = try parse("GET / HTTP/1.1\r\nAccept: */*\r\nUser-Agent: t\r\nHost: h.example:8080\r\n\r\n")
        #expect(head.hostField == 2)
        #expect(head.value(of: "host") == "h.example:8080")
    }

    @Test func acceptsAbsoluteFormAndAsteriskTargets() throws {
        #expect(try parse("GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n").targetString == "http://example.com/a?b")
        #expect(try parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").targetString == "*")
    }

    @Test func acceptsAnyTokenAsMethod() throws {
        let head = try parse("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(head.methodString == "M-SEARCH")
        #expect(try parse("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").isHEAD)
    }

    @Test func reusesAHeadWhenParsingInto() throws {
        var head = RequestHead()
        head.bytes = Array("GET /a HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n".utf8)
        try HeadParser.parseRequest(into: &head, limits: HeadLimits())
        #expect(head.fields.count == 3)
        head.bytes = Array("POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\n".utf8)
        try HeadParser.parseRequest(into: &head, limits: HeadLimits())
        #expect(head.fields.count == 2)
        #expect(head.targetString == "/b")
        #expect(head.framing == .contentLength(2))
    }

    @Test func rejectsIncompleteOrEmptyHeadsPassedDirectly() {
        for raw in ["", "\r\n", "\n\n", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r\nextra", "GET"] {
            #expect(throws: HTTPParseError.self, "\(raw.debugDescription)") {
                _ = try HeadParser.parseRequest(Array(raw.utf8), limits: HeadLimits())
            }
            #expect(throws: HTTPParseError.self, "\(raw.debugDescription)") {
                _ = try HeadParser.parseResponse(Array(raw.utf8), requestWasHEAD: false)
            }
        }
    }

    @Test func parsesTheSameWhenFedOneByteAtATime() throws {
        let raw = "\r\nPOST /path?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 42\nX-A:  v  \r\nConnection: close\r\n\r\nBODY"
        let whole = try parse(raw)
        for step in [1, 2, 3, 7] {
            let split = try parse(raw, step: step)
            #expect(split.bytes == whole.bytes)
            #expect(split.method == whole.method)
            #expect(split.target == whole.target)
            #expect(split.fields == whole.fields)
            #expect(split.framing == whole.framing)
            #expect(split.keepAlive == whole.keepAlive)
        }
        #expect(whole.framing == .contentLength(42))
        #expect(!whole.keepAlive)
    }
}

// MARK: - Rejected requests (DESIGN.md §4)

struct HTTPRequestRejectionTests {
    @Test func rejectsContentLengthWithTransferEncoding() {
        let e1 = rejection(request(with: "Content-Length: 5\r\nTransfer-Encoding: chunked"))
        #expect(e1?.status == 400)
        #expect(e1?.reason == "Bad Request: both Content-Length and Transfer-Encoding")
        #expect(rejection(request(with: "Transfer-Encoding: chunked\r\nContent-Length: 5"))?.status == 400)
        #expect(rejection(request(with: "Transfer-Encoding: chunked\r\nContent-Length: 0"))?.status == 400)
    }

    @Test(arguments: [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: 5,",
        "Content-Length: ,5",
        "Content-Length: 5,,5",
        "Content-Length: abc",
        "Content-Length: 5a",
        "Content-Length: +5",
        "Content-Length: -5",
        "Content-Length: 0x10",
        "Content-Length: 1 2",
        "Content-Length: 1.0",
        "Content-Length:",
        "Content-Length:    ",
        "Content-Length: 5\r\nContent-Length:",
        "Content-Length: 9223372036854775808",
        "Content-Length: 9999999999999999999",
        "Content-Length: 18446744073709551616",
        "Content-Length: 00000000000000000001",
    ])
    func rejectsInvalidOrConflictingContentLength(_ field: String) {
        #expect(rejection(request(with: field))?.status == 400, "\(field)")
    }

    @Test(arguments: [
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunkedx",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: identity",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding:",
        "Transfer-Encoding: chunked,",
        "Transfer-Encoding: chunked;q=1",
        "Transfer-Encoding: \"chunked\"",
    ])
    func rejectsTransferCodingsOtherThanExactlyChunked(_ field: String) {
        let error = rejection(request(with: field))
        #expect(error?.status == 501, "\(field)")
        #expect(error?.reason == "Not Implemented: transfer coding")
    }

    @Test func rejectsTransferEncodingInAnHTTP10Request() {
        #expect(rejection("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")?.status == 400)
    }

    @Test(arguments: [
        "Transfer-Encoding : chunked",
        "Host2 : x",
        "X\tY: z",
        "X Y: z",
        ": empty-name",
        "X(Y): z",
        "X@Y: z",
        "X/Y: z",
        "X\"Y: z",
        "X[Y]: z",
        "X{Y}: z",
        "X=Y: z",
        "NoColon",
    ])
    func rejectsWhitespaceOrNonTokenBytesInHeaderNames(_ field: String) {
        #expect(rejection(request(with: field))?.status == 400, "\(field)")
    }

    @Test func rejectsNonASCIIAndControlBytesInHeaderNames() {
        for bad: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xC3] {
            let raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX".utf8) + [bad] + Array(": v\r\n\r\n".utf8)
            #expect(rejection(raw)?.status == 400, "byte \(bad)")
        }
    }

    @Test func rejectsObsoleteLineFolding() {
        #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n")?.status == 400)
        #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n\ttwo\r\n\r\n")?.status == 400)
        // Whitespace between the request line and the first field (RFC 9112 §2.2).
        #expect(rejection("GET / HTTP/1.1\r\n Host: a\r\n\r\n")?.status == 400)
        #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n")?.status == 400)
    }

    @Test(arguments: [
        "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\rX: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        "GET / HTTP/1.1\rHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
        "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX\r: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\n",
    ])
    func rejectsBareCarriageReturnsAnywhere(_ raw: String) {
        #expect(rejection(raw)?.status == 400, "\(raw.debugDescription)")
    }

    @Test func rejectsNULAndControlBytesInFieldValues() {
        for bad: UInt8 in [0x00, 0x01, 0x08, 0x0B, 0x0C, 0x1B, 0x1F, 0x7F] {
            let raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX-V: be".utf8) + [bad] + Array("fore\r\n\r\n".utf8)
            #expect(rejection(raw)?.status == 400, "byte \(bad)")
        }
    }

    @Test func rejectsAForbiddenByteAtAnyPositionOfALongValue() {
        // Values are checked eight bytes at a time: put the bad byte in every lane of several words.
        for bad: UInt8 in [0x00, 0x01, 0x0D, 0x1F, 0x7F] {
            for position in 0..<40 {
                var value = [UInt8](repeating: UInt8(ascii: "v"), count: 40)
                value[position] = bad
                let raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX: ".utf8) + value + Array("z\r\n\r\n".utf8)
                #expect(rejection(raw)?.status == 400, "byte \(bad) at \(position)")
            }
        }
    }

    @Test func acceptsEveryAllowedByteInALongValue() throws {
        let allowed = [UInt8(ascii: "x")] + Array(0x20...0x7E) + [0x09] + Array(0x80...0xFF) + [UInt8(ascii: "x")]
        let raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX: ".utf8) + allowed + Array("\r\n\r\n".utf8)
        let head = try parse(raw)
        #expect(Array(head.bytes[head.fields[1].value]) == allowed)
    }

    @Test func rejectsAForbiddenByteAtAnyPositionOfALongTarget() throws {
        for bad: UInt8 in [0x00, 0x09, 0x7F, 0x80, 0xFF] {
            for position in 1..<40 {
                var target = [UInt8](repeating: UInt8(ascii: "t"), count: 40)
                target[0] = UInt8(ascii: "/")
                target[position] = bad
                let raw = Array("GET ".utf8) + target + Array(" HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
                #expect(rejection(raw)?.status == 400, "byte \(bad) at \(position)")
            }
        }
        let every = "/" + String(decoding: Array(0x21...0x7E), as: UTF8.self)
        #expect(try parse("GET \(every) HTTP/1.1\r\nHost: a\r\n\r\n").targetString == every)
    }

    @Test func rejectsHTTP11WithoutHost() {
        let error = rejection("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
        #expect(error?.status == 400)
        #expect(error?.reason == "Bad Request: missing Host header")
    }

    @Test func rejectsTwoHostHeaders() {
        #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")?.status == 400)
        #expect(rejection("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n")?.status == 400)
    }

    @Test(arguments: [
        "GET / http/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "GET / HTTP/1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        "GET / HTTP/x.1\r\nHost: a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\tHTTP/1.1\r\nHost: a\r\n\r\n",
        "GET HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    ])
    func rejectsMalformedRequestLines(_ raw: String) {
        #expect(rejection(raw)?.status == 400, "\(raw.debugDescription)")
    }

    @Test func rejectsControlAndNonASCIIBytesInTheTarget() {
        for bad: UInt8 in [0x00, 0x09, 0x7F, 0x80, 0xFF] {
            let raw = Array("GET /a".utf8) + [bad] + Array("b HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            #expect(rejection(raw)?.status == 400, "byte \(bad)")
        }
    }

    @Test func answersUnsupportedVersionsWith505() {
        for version in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.1"] {
            let error = rejection("GET / \(version)\r\nHost: a\r\n\r\n")
            #expect(error?.status == 505, "\(version)")
            #expect(error?.reason == "HTTP Version Not Supported")
        }
    }

    @Test func answersATooLongTargetWith414() {
        let limits = HeadLimits(maxHeadBytes: 32 * 1024, maxTargetBytes: 100)
        let ok = "/" + String(repeating: "a", count: 99)
        #expect(rejection("GET \(ok) HTTP/1.1\r\nHost: a\r\n\r\n", limits: limits) == nil)
        let error = rejection("GET \(ok)b HTTP/1.1\r\nHost: a\r\n\r\n", limits: limits)
        #expect(error?.status == 414)
        #expect(error?.reason == "URI Too Long")
    }

    @Test func answersARequestLineThatNeverEndsWith414() throws {
        // Longer than the target limit plus slack, still growing: refused before the head limit.
        let limits = HeadLimits(maxHeadBytes: 32 * 1024, maxTargetBytes: 1000)
        var accumulator = HeadAccumulator(limits: limits, isRequest: true)
        let line = Array(("GET /" + String(repeating: "a", count: 1000 + HeadAccumulator.requestLineSlack)).utf8)
        let error = #expect(throws: HTTPParseError.self) {
            _ = try line.withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
        }
        #expect(error?.status == 414)
        // No line end before the head limit.
        let small = HeadLimits(maxHeadBytes: 512, maxTargetBytes: 8 * 1024)
        #expect(rejection("GET /" + String(repeating: "a", count: 600), limits: small)?.status == 414)
    }

    @Test func answersAHugeHeadWith431() {
        let limits = HeadLimits(maxHeadBytes: 1024)
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "x", count: 2000) + "\r\n\r\n"
        let error = rejection(big, limits: limits)
        #expect(error?.status == 431)
        #expect(error?.reason == "Request Header Fields Too Large")
        #expect(rejection(big)?.status == nil, "fits the default 32 KiB limit")
    }

    @Test func acceptsAHeadOfExactlyTheLimit() throws {
        let base = "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "y", count: 100 - base.utf8.count) + "\r\n\r\n"
        #expect(raw.utf8.count == 100)
        #expect(rejection(raw, limits: HeadLimits(maxHeadBytes: 100)) == nil)
        #expect(rejection(raw, limits: HeadLimits(maxHeadBytes: 99))?.status == 431)
    }

    @Test func countsLeadingEmptyLinesTowardTheHeadLimit() {
        let raw = String(repeating: "\r\n", count: 40) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(rejection(raw, limits: HeadLimits(maxHeadBytes: 100))?.status == 431)
        #expect(rejection(raw, limits: HeadLimits(maxHeadBytes: 200)) == nil)
    }

    @Test func answersTooManyHeaderFieldsWith431() {
        let limits = HeadLimits(maxHeaderCount: 5)
        let fields = (1...4).map { "X-\($0): v\r\n" }.joined()
        #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\n\(fields)\r\n", limits: limits) == nil)
        let error = rejection("GET / HTTP/1.1\r\nHost: a\r\n\(fields)X-5: v\r\n\r\n", limits: limits)
        #expect(error?.status == 431)
    }
}

// MARK: - HeadAccumulator

struct HTTPHeadAccumulatorTests {
    @Test func stopsAtTheEndOfTheHeadWithPipelinedInput() throws {
        let first = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        let raw = Array((first + "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").utf8)
        var accumulator = HeadAccumulator(limits: HeadLimits(), isRequest: true)
        let used = try raw.withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
        #expect(used == first.utf8.count)
        #expect(accumulator.isComplete)
        #expect(accumulator.bytes == Array(first.utf8))
        // Further input is not taken once complete.
        let again = try raw.withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
        #expect(again == 0)

        accumulator.reset()
        #expect(!accumulator.isComplete)
        #expect(accumulator.bytes.isEmpty)
        let rest = try raw.withRawBytes { (buf) throws(HTTPParseError) in
            try accumulator.append(UnsafeRawBufferPointer(rebasing: buf[used...]))
        }
        #expect(rest == raw.count - used)
        #expect(try HeadParser.parseRequest(accumulator.bytes, limits: HeadLimits()).targetString == "/2")
    }

    @Test func leavesTheBodyUnconsumed() throws {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
        let (bytes, consumed) = try accumulate(Array((head + "hello").utf8))
        #expect(consumed == head.utf8.count)
        #expect(bytes.count == head.utf8.count)
    }

    @Test(arguments: ["\r\n\r\n", "\n\n", "\r\n\n", "\n\r\n"])
    func findsEveryHeadTerminatorSplitAtEveryPoint(_ terminator: String) throws {
        let raw = Array(("GET / HTTP/1.1\r\nHost: a" + terminator + "NEXT").utf8)
        let headLength = raw.count - 4
        for cut in 1..<raw.count {
            var accumulator = HeadAccumulator(limits: HeadLimits(), isRequest: true)
            var used = try raw.withRawBytes { (buf) throws(HTTPParseError) in
                try accumulator.append(UnsafeRawBufferPointer(rebasing: buf[..<cut]))
            }
            if !accumulator.isComplete {
                #expect(used == cut)
                used += try raw.withRawBytes { (buf) throws(HTTPParseError) in
                    try accumulator.append(UnsafeRawBufferPointer(rebasing: buf[cut...]))
                }
            }
            #expect(accumulator.isComplete, "cut at \(cut)")
            #expect(used == headLength, "cut at \(cut)")
            #expect(accumulator.bytes == Array(raw[..<headLength]))
        }
    }

    /// A bare CR is no line end; a head that holds one and has not ended is refused at once
    /// (issue 12 §1.14: it used to wait for the peer's deadline), whole or byte by byte.
    @Test func refusesABareCRInAHeadThatHasNotEnded() throws {
        for step in [nil, 1] as [Int?] {
            for isRequest in [true, false] {
                var accumulator = HeadAccumulator(limits: HeadLimits(), isRequest: isRequest)
                let raw = Array((isRequest ? "GET / HTTP/1.1\r\nHost: a\r\r\r\r" : "HTTP/1.1 200 OK\rContent-Length: 2\r").utf8)
                var error: HTTPParseError?
                do {
                    var offset = 0
                    while offset < raw.count {
                        let end = min(raw.count, offset + (step ?? raw.count))
                        offset += try Array(raw[offset..<end]).withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
                    }
                } catch let e { error = e }
                #expect(error?.status == (isRequest ? 400 : 502), "step \(String(describing: step)) request \(isRequest)")
                #expect(!accumulator.isComplete)
            }
        }
        // A CR that ends a read is no verdict yet: its LF may come next.
        var accumulator = HeadAccumulator(limits: HeadLimits(), isRequest: true)
        #expect(try Array("GET / HTTP/1.1\r".utf8).withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) } == 15)
        #expect(try Array("\nHost: a\r\n\r\n".utf8).withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) } == 12)
        #expect(accumulator.isComplete)
    }

    @Test func feedsOneByteAtATimeInLinearTime() throws {
        // 30 KiB of fields one byte per call: quadratic rescanning would be ~450M byte visits.
        let fields = String(repeating: "X-Filler: 0123456789abcdef0123456789\r\n", count: 800)
        let raw = Array(("GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n").utf8)
        let head = try parse(raw, limits: HeadLimits(maxHeadBytes: 64 * 1024, maxHeaderCount: 1000), step: 1)
        #expect(head.fields.count == 801)
    }

    @Test func answersAHugeHeadArrivingInPiecesWith431() {
        var accumulator = HeadAccumulator(limits: HeadLimits(maxHeadBytes: 200), isRequest: true)
        let piece = Array("X-Some-Header: some value\r\n".utf8)
        var error: HTTPParseError?
        do {
            _ = try Array("GET / HTTP/1.1\r\n".utf8).withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
            for _ in 0..<20 {
                _ = try piece.withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
            }
        } catch let e {
            error = e
        }
        #expect(error?.status == 431)
        #expect(accumulator.bytes.count <= 200, "never stores more than the limit")
    }

    @Test func movesItsBytesOutAndTakesTheOtherBuffer() throws {
        var accumulator = HeadAccumulator(limits: HeadLimits(), isRequest: true)
        let raw = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        _ = try raw.withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
        var head = RequestHead(bytes: Array("old".utf8))
        accumulator.moveBytes(into: &head.bytes)
        #expect(head.bytes == raw)
        #expect(accumulator.bytes.isEmpty)
        #expect(!accumulator.isComplete)
        try HeadParser.parseRequest(into: &head, limits: HeadLimits())
        #expect(head.hostField == 0)
    }

    @Test func answersATooLargeResponseHeadWith502() {
        var accumulator = HeadAccumulator(limits: HeadLimits(maxHeadBytes: 64), isRequest: false)
        let raw = Array(("HTTP/1.1 200 OK\r\nX: " + String(repeating: "v", count: 100)).utf8)
        let error = #expect(throws: HTTPParseError.self) {
            _ = try raw.withRawBytes { (buf) throws(HTTPParseError) in try accumulator.append(buf) }
        }
        #expect(error?.status == 502)
    }
}

// MARK: - Responses

struct HTTPResponseParsingTests {
    /// What the parser records so that no one searches the fields again per exchange (the
    /// event-stream deadline, the backend's keep-alive timeout, whether `Connection` lists fields
    /// the rewriter must drop).
    @Test func recordsTheFieldsTheProxyConsultsPerExchange() throws {
        let sse = try parseResponse("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nConnection: keep-alive\r\n\r\n")
        #expect(sse.isEventStream)
        #expect(sse.keepAliveField == 0)
        #expect(!sse.connectionNamesOthers)
        let plain = try parseResponse("HTTP/1.1 200 OK\r\nContent-Type: text/event\r\nConnection: close, X-Hop\r\nContent-Length: 0\r\n\r\n")
        #expect(!plain.isEventStream)
        #expect(plain.keepAliveField == nil)
        #expect(plain.connectionNamesOthers)
        let request = try parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: Upgrade, keep-alive\r\n\r\n")
        #expect(request.hasContentLengthField && request.framing == .none)
        #expect(!request.connectionNamesOthers)
        let other = try parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-debug\r\n\r\n")
        #expect(!other.hasContentLengthField && other.connectionNamesOthers)
        // The first of repeated fields counts, as a search would find it.
        let repeated = try parseResponse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=2\r\nContent-Type: text/event-stream\r\nKeep-Alive: max=100\r\nContent-Length: 0\r\n\r\n")
        #expect(!repeated.isEventStream && repeated.keepAliveField == 1)
        // `close` names a field only when one called Close is there.
        let closeField = try parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nClose: 1\r\n\r\n")
        #expect(closeField.connectionNamesOthers)
        let plainClose = try parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        #expect(!plainClose.connectionNamesOthers)
    }

    @Test func parsesAResponseWithContentLength() throws {
        let head = try parseResponse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n")
        #expect(head.status == 200)
        #expect(head.bytes.string(head.reason) == "OK")
        #expect(head.versionMinor == 1)
        #expect(head.fields.count == 2)
        #expect(head.framing == .contentLength(13))
        #expect(head.keepAlive)
        #expect(head.value(of: "content-type") == "text/plain")
    }

    @Test func readsABodyWithoutLengthUntilClose() throws {
        let head = try parseResponse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        #expect(head.framing == .untilClose)
        #expect(!head.keepAlive)
    }

    @Test func parsesAChunkedResponse() throws {
        let head = try parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(head.framing == .chunked)
        #expect(head.keepAlive)
    }

    @Test func treatsContentLengthZeroAsNoBody() throws {
        #expect(try parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").framing == .none)
    }

    @Test func givesHEADResponsesNoBodyWhateverTheHeadersSay() throws {
        let head = try parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", requestWasHEAD: true)
        #expect(head.framing == .none)
        #expect(head.keepAlive)
        #expect(try parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", requestWasHEAD: true).framing == .none)
        #expect(try parseResponse("HTTP/1.1 200 OK\r\n\r\n", requestWasHEAD: true).keepAlive, "not until-close")
    }

    @Test(arguments: [100, 101, 102, 103, 204, 304])
    func givesInterimNoContentAndNotModifiedResponsesNoBody(_ status: Int) throws {
        let head = try parseResponse("HTTP/1.1 \(status) X\r\nContent-Length: 10\r\n\r\n")
        #expect(head.status == UInt16(status))
        #expect(head.framing == .none)
        let bare = try parseResponse("HTTP/1.1 \(status) X\r\n\r\n")
        #expect(bare.framing == .none)
        #expect(bare.keepAlive)
    }

    @Test func reportsInterimResponses() throws {
        #expect(try parseResponse("HTTP/1.1 100 Continue\r\n\r\n").isInterim)
        #expect(try parseResponse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n").isInterim)
        #expect(try !parseResponse("HTTP/1.1 101 Switching Protocols\r\n\r\n").isInterim)
    }

    @Test func keepsUpstreamConnectionsPerVersionAndConnectionHeader() throws {
        #expect(try !parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n").keepAlive)
        #expect(try !parseResponse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keepAlive)
        #expect(try parseResponse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n").keepAlive)
        let closeDelimited = try parseResponse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")
        #expect(closeDelimited.framing == .untilClose)
        #expect(!closeDelimited.keepAlive)
    }

    @Test func acceptsStatusLinesWithoutAReason() throws {
        let noSpace = try parseResponse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        #expect(noSpace.status == 200)
        #expect(noSpace.reason.isEmpty)
        #expect(try parseResponse("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n").status == 404)
        #expect(try parseResponse("HTTP/1.1 500 Internal  Server Error\nContent-Length: 0\n\n").status == 500)
    }

    @Test func mergesIdenticalDuplicateContentLengths() throws {
        #expect(try parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n").framing == .contentLength(7))
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ])
    func rejectsConflictingFramingFromUpstreamWith502(_ raw: String) {
        #expect(responseRejection(raw)?.status == 502, "\(raw.debugDescription)")
    }

    @Test(arguments: [
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\r\n\r\n",
        "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    ])
    func rejectsMalformedResponseHeadsWith502(_ raw: String) {
        #expect(responseRejection(raw)?.status == 502, "\(raw.debugDescription)")
    }

    @Test func rejectsControlBytesInResponseValuesWith502() throws {
        let raw = Array("HTTP/1.1 200 OK\r\nX: a".utf8) + [0x00] + Array("\r\n\r\n".utf8)
        let error = #expect(throws: HTTPParseError.self) {
            _ = try HeadParser.parseResponse(raw, requestWasHEAD: false)
        }
        #expect(error?.status == 502)
    }

    @Test func reusesAResponseHeadWhenParsingInto() throws {
        var head = ResponseHead(bytes: Array("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n".utf8))
        try HeadParser.parseResponse(into: &head, requestWasHEAD: false)
        #expect(head.fields.count == 2)
        head.bytes = Array("HTTP/1.1 204 No Content\r\n\r\n".utf8)
        try HeadParser.parseResponse(into: &head, requestWasHEAD: false)
        #expect(head.fields.isEmpty)
        #expect(head.status == 204)
        #expect(head.framing == .none)
    }
}

// MARK: - Mutated inputs

/// A small deterministic generator (xorshift64*) so failures reproduce.
struct ParserTestRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2685821657736338717
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// Flips, inserts or deletes a few bytes, favouring the bytes that matter to HTTP framing.
func mutateForParserTests(_ input: [UInt8], _ random: inout ParserTestRandom) -> [UInt8] {
    let interesting: [UInt8] = Array("\r\n :;,=\"\\\t0aF-".utf8) + [0x00, 0x7F, 0x80, 0xFF]
    var bytes = input
    for _ in 0...random.below(3) {
        let byte = random.below(2) == 0 ? interesting[random.below(interesting.count)] : UInt8(truncatingIfNeeded: random.next())
        let at = random.below(bytes.count + 1)
        switch random.below(3) {
        case 0 where at < bytes.count: bytes[at] = byte
        case 1 where at < bytes.count: bytes.remove(at: at)
        default: bytes.insert(byte, at: at)
        }
    }
    return bytes
}

struct HTTPMutatedHeadTests {
    /// Whatever the bytes, feeding them whole or one byte at a time gives the same verdict, and
    /// nothing reads outside the buffer (run under `--sanitize=address` to check the latter).
    @Test func givesTheSameVerdictWholeOrByteByByteForMutatedHeads() {
        let seeds = [
            "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
            "\r\nPOST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n",
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\nExpect: 100-continue\r\n\r\n",
        ].map { Array($0.utf8) }
        let limits = HeadLimits(maxHeadBytes: 200, maxTargetBytes: 20, maxHeaderCount: 4)
        var random = ParserTestRandom(state: 0x9E37_79B9_7F4A_7C15)
        for round in 0..<3000 {
            let raw = mutateForParserTests(seeds[round % seeds.count], &random)
            var verdicts: [String] = []
            for step in [nil, 1] as [Int?] {
                do {
                    let head = try parse(raw, limits: limits, step: step)
                    verdicts.append("ok \(head.fields) \(head.framing) \(head.keepAlive) \(head.bytes.count)")
                } catch {
                    verdicts.append("error \(error.status)")
                }
            }
            #expect(verdicts[0] == verdicts[1], "round \(round): \(String(decoding: raw, as: UTF8.self).debugDescription)")
        }
    }

    @Test func neverCrashesOnMutatedResponses() {
        let seed = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n".utf8)
        var random = ParserTestRandom(state: 42)
        for _ in 0..<3000 {
            let raw = mutateForParserTests(seed, &random)
            if let head = try? HeadParser.parseResponse(raw, requestWasHEAD: false) {
                #expect(head.status >= 100)
            }
        }
    }
}
