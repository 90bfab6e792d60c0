/// Strict HTTP/1.x head parsing (RFC 9112, RFC 9110), see ../shared/DESIGN.md §4.
///
/// The parser makes one pass over a complete head (from `HeadAccumulator`), classifying each byte
/// with a 256-entry table, and records every part as a range into the head's bytes: no `String`s and
/// no allocation per field (the `fields` array keeps its capacity when a head is reused through the
/// `into:` variants). Only the headers that decide framing and connection reuse are interpreted:
/// `Content-Length`, `Transfer-Encoding`, `Host`, `Connection` and `Expect`.
///
/// It is deliberately strict wherever leniency lets two parsers disagree about where a message
/// ends (request smuggling): conflicting lengths, `Content-Length` with `Transfer-Encoding`, codings
/// other than `chunked`, obs-fold, bare CR and control bytes are all refused. Bare LF line ends are
/// accepted in the head, since they cannot hide a message boundary there.
///
/// Zero-length bodies: `Content-Length: 0` gives `.none` for requests and responses alike, so
/// `.none` always means "no body bytes follow". Whoever re-serialises a *response* whose status allows
/// a body must then write `Content-Length: 0` itself (without any length, an HTTP/1.1 client would
/// read until close).
public enum HeadParser {

    // MARK: Requests

    /// Parses a complete request head (as produced by `HeadAccumulator`: `bytes` ends with the
    /// terminating blank line; anything else is refused as incomplete). Errors carry 400, 414, 431,
    /// 501 or 505.
    public static func parseRequest(_ bytes: [UInt8], limits: HeadLimits) throws(HTTPParseError) -> RequestHead {
        var head = RequestHead(bytes: bytes)
        try parseRequest(into: &head, limits: limits)
        return head
    }

    /// Parses `head.bytes` into `head`, reusing the capacity of `head.fields`. After an error the
    /// other properties of `head` are unspecified.
    public static func parseRequest(into head: inout RequestHead, limits: HeadLimits) throws(HTTPParseError) {
        // Work on a local array so the closure below does not touch `head` while its bytes are borrowed.
        var fields: [HeaderField] = []
        swap(&fields, &head.fields)
        fields.removeAll(keepingCapacity: true)
        defer { swap(&fields, &head.fields) }
        let (line, summary) = try withScanner(head.bytes, errorStatus: 400) {
            (scanner: inout HeadScanner) throws(HTTPParseError) -> (RequestLine, FieldSummary) in
            let line = try scanner.requestLine(limits: limits)
            var summary = FieldSummary()
            try scanner.fields(into: &fields, maxCount: limits.maxHeaderCount, summary: &summary)
            return (line, summary)
        }
        head.method = line.method
        head.isHTTP2 = false
        head.target = line.target
        head.versionMinor = line.versionMinor
        let http11 = line.versionMinor == 1

        if summary.hostCount > 1 { throw badRequest("multiple Host headers") }
        if http11 && summary.hostCount == 0 { throw badRequest("missing Host header") }
        head.hostField = summary.hostField

        // Checked after all fields so the answer does not depend on their order.
        if summary.hasTransferEncoding {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            if !http11 { throw badRequest("Transfer-Encoding in an HTTP/1.0 request") }
            if summary.contentLength != nil { throw badRequest("both Content-Length and Transfer-Encoding") }
            if summary.chunkedCount != 1 || summary.otherCodings {
                throw HTTPParseError(status: 501, reason: "Not Implemented: transfer coding")
            }
            head.framing = .chunked
        } else if let length = summary.contentLength, length > 0 {
            head.framing = .contentLength(length)
        } else {
            head.framing = .none
        }

        head.keepAlive = http11 ? !summary.connectionClose : (summary.connectionKeepAlive && !summary.connectionClose)
        head.expectsContinue = http11 && summary.expectsContinue
        head.connectionUpgrade = summary.connectionUpgrade
        head.requestIDField = summary.requestIDField
        head.hasVia = summary.hasVia
        head.hasContentLengthField = summary.contentLength != nil
        head.connectionNamesOthers = summary.namesFieldsToDrop
    }

    // MARK: Responses

    /// Parses a complete response head. `requestWasHEAD` makes the framing `.none`; 1xx, 204 and 304
    /// are `.none` too (RFC 9112 §6.3). No length headers and not chunked → `.untilClose` (and
    /// `keepAlive` false). Every error carries status 502.
    public static func parseResponse(_ bytes: [UInt8], requestWasHEAD: Bool) throws(HTTPParseError) -> ResponseHead {
        var head = ResponseHead(bytes: bytes)
        try parseResponse(into: &head, requestWasHEAD: requestWasHEAD)
        return head
    }

    /// Parses `head.bytes` into `head`, reusing the capacity of `head.fields`. After an error the
    /// other properties of `head` are unspecified.
    ///
    /// Framing headers are validated even when the status or method means there is no body: an
    /// upstream that sends contradictory framing is not trusted with the connection afterwards.
    public static func parseResponse(into head: inout ResponseHead, requestWasHEAD: Bool) throws(HTTPParseError) {
        var fields: [HeaderField] = []
        swap(&fields, &head.fields)
        fields.removeAll(keepingCapacity: true)
        defer { swap(&fields, &head.fields) }
        head.keepAliveField = nil  // an index into the fields just cleared: never left stale by an error
        let (line, summary) = try withScanner(head.bytes, errorStatus: 502) {
            (scanner: inout HeadScanner) throws(HTTPParseError) -> (StatusLine, FieldSummary) in
            let line = try scanner.statusLine()
            var summary = FieldSummary()
            // The head size limit already bounds the field count; upstreams are not capped further.
            try scanner.fields(into: &fields, maxCount: .max, summary: &summary)
            return (line, summary)
        }
        head.status = line.status
        head.reason = line.reason
        head.versionMinor = line.versionMinor
        let http11 = line.versionMinor == 1

        if summary.hasTransferEncoding {
            if !http11 { throw badGateway("Transfer-Encoding in an HTTP/1.0 response") }
            if summary.contentLength != nil { throw badGateway("both Content-Length and Transfer-Encoding") }
            // RFC 9112 §6.3 would read a non-chunked final coding until close; we refuse it instead.
            if summary.chunkedCount != 1 || summary.otherCodings { throw badGateway("unsupported transfer coding") }
        }

        let status = line.status
        if requestWasHEAD || status < 200 || status == 204 || status == 304 {
            head.framing = .none
        } else if summary.hasTransferEncoding {
            head.framing = .chunked
        } else if let length = summary.contentLength {
            head.framing = length > 0 ? .contentLength(length) : .none
        } else {
            head.framing = .untilClose
        }

        let reusable = http11 ? !summary.connectionClose : (summary.connectionKeepAlive && !summary.connectionClose)
        head.keepAlive = reusable && head.framing != .untilClose
        head.isEventStream = summary.isEventStream
        head.keepAliveField = summary.keepAliveField
        head.connectionNamesOthers = summary.namesFieldsToDrop
    }

    /// Runs `body` with a scanner over `bytes` and the byte-class table, both borrowed for the call.
    @inline(__always)
    static func withScanner<R>(_ bytes: [UInt8], errorStatus: UInt16,
                               _ body: (inout HeadScanner) throws(HTTPParseError) -> R) throws(HTTPParseError) -> R {
        try bytes.withUnsafeBufferPointer { (buf) throws(HTTPParseError) -> R in
            try httpByteClass.withUnsafeBufferPointer { (table) throws(HTTPParseError) -> R in
                var scanner = HeadScanner(buf, table.baseAddress!, errorStatus: errorStatus)
                // The LF sentinel that lets the scanner's byte loops skip bounds checks (see `skip`).
                guard scanner.end > 0, scanner.p[scanner.end - 1] == UInt8(ascii: "\n") else {
                    throw scanner.fail("incomplete head")
                }
                return try body(&scanner)
            }
        }
    }

    // MARK: Errors

    static func badRequest(_ detail: String) -> HTTPParseError {
        HTTPParseError(status: 400, reason: "Bad Request: " + detail)
    }

    static func badGateway(_ detail: String) -> HTTPParseError {
        HTTPParseError(status: 502, reason: "Bad Gateway: " + detail)
    }
}

// MARK: - Byte classes

/// Bit flags in `httpByteClass`.
enum HTTPByteClass {
    /// tchar (RFC 9110 §5.6.2): token bytes for methods, field names, codings.
    static let tchar: UInt8 = 0x01
    /// Field value bytes: HTAB, SP, VCHAR (0x21–0x7E) and obs-text (0x80–0xFF). Not NUL, CTLs, DEL.
    static let fieldValue: UInt8 = 0x02
    /// Request-target bytes: VCHAR only (no SP, CTL, DEL or bytes ≥ 0x80).
    static let target: UInt8 = 0x04
    static let digit: UInt8 = 0x08
    static let hexDigit: UInt8 = 0x10
    /// OWS: SP and HTAB.
    static let whitespace: UInt8 = 0x20
    /// qdtext (RFC 9110 §5.6.4): HTAB, SP, 0x21, 0x23–0x5B, 0x5D–0x7E, obs-text.
    static let qdtext: UInt8 = 0x40
}

/// Class flags for every byte value (see `HTTPByteClass`). A literal so the optimiser emits it as
/// static data: no lazy initialisation, no branches on the hot path, just an indexed load.
/// `HTTPParserTests` checks it against the RFC definitions.
let httpByteClass: [UInt8] = [
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x62, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // 0x00
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // 0x10
    0x62, 0x47, 0x06, 0x47, 0x47, 0x47, 0x47, 0x47, 0x46, 0x46, 0x47, 0x47, 0x46, 0x47, 0x47, 0x46,  // 0x20
    0x5F, 0x5F, 0x5F, 0x5F, 0x5F, 0x5F, 0x5F, 0x5F, 0x5F, 0x5F, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46,  // 0x30
    0x46, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47,  // 0x40
    0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x46, 0x06, 0x46, 0x47, 0x47,  // 0x50
    0x47, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47,  // 0x60
    0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x46, 0x47, 0x46, 0x47, 0x00,  // 0x70
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0x80
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0x90
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0xA0
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0xB0
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0xC0
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0xD0
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0xE0
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,  // 0xF0
]

// MARK: - HeadScanner

struct RequestLine {
    var method: Range<Int>
    var target: Range<Int>
    var versionMinor: UInt8
}

struct StatusLine {
    var status: UInt16
    var reason: Range<Int>
    var versionMinor: UInt8
}

/// What the framing- and connection-relevant fields said, gathered during the field pass.
struct FieldSummary {
    /// `Connection` names a field the rewriter must drop by name (not one `isHopByHop` drops
    /// anyway): another token, or `close` with a field called `Close` present.
    var namesFieldsToDrop: Bool { connectionNamesOthers || (connectionClose && hasCloseField) }

    var contentLength: UInt64?
    var hasTransferEncoding = false
    /// How many `chunked` codings appeared over all Transfer-Encoding fields.
    var chunkedCount = 0
    /// Some coding other than `chunked`, or an empty list element.
    var otherCodings = false
    var hostCount = 0
    var hostField: Int?
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    var expectsContinue = false
    var requestIDField: Int?
    var hasVia = false
    /// `Content-Type` begins with `text/event-stream` (the last such field decides).
    var isEventStream = false
    /// Index of the (last) `Keep-Alive` field, if any.
    var keepAliveField: Int?
    /// A `Connection` field names something other than `close`, `keep-alive` and `upgrade`.
    var connectionNamesOthers = false
    /// A field named `Close` is present (hop-by-hop when `Connection: close` names it).
    var hasCloseField = false
    var sawContentType = false
}

/// A cursor over a complete head (one that ends with LF). Every error it throws carries
/// `errorStatus` (400 for requests, 502 for responses) unless the rule has its own status
/// (414, 431, 505).
struct HeadScanner {
    let p: UnsafePointer<UInt8>
    let end: Int
    let table: UnsafePointer<UInt8>
    let errorStatus: UInt16
    var i = 0

    init(_ buf: UnsafeBufferPointer<UInt8>, _ table: UnsafePointer<UInt8>, errorStatus: UInt16) {
        // An empty array may have no storage; point at the table so `p` is never dangling (end is 0).
        self.p = buf.baseAddress ?? table
        self.end = buf.count
        self.table = table
        self.errorStatus = errorStatus
    }

    @inline(__always)
    func has(_ b: UInt8, _ flag: UInt8) -> Bool { table[Int(b)] & flag != 0 }

    func fail(_ detail: String) -> HTTPParseError {
        errorStatus == 400 ? HeadParser.badRequest(detail) : HeadParser.badGateway(detail)
    }

    /// Advances past bytes of class `flag`.
    ///
    /// No `i < end` test: a complete head ends with LF (checked in `withScanner`), and LF belongs to
    /// none of the classes scanned this way, so the loop always stops inside the buffer.
    @inline(__always)
    mutating func skip(_ flag: UInt8) {
        while table[Int(p[i])] & flag != 0 { i &+= 1 }  // `&+`: i < end, so no overflow check
    }

    // Field values and targets are most of a head's bytes, so they are checked eight at a time
    // (SWAR: "SIMD within a register") before the per-byte table loop finishes the run. Each test
    // below is exact about whether *some* byte of the word matches, which is all that is needed:
    // a word with any doubtful byte is left to the table loop. Measured (callgrind): ~2 instructions
    // per byte against ~5 in the table loop.
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// Whether some byte of `w` is below `n` (n ≤ 128).
    @inline(__always)
    static func hasByte(_ w: UInt64, lessThan n: UInt8) -> Bool {
        (w &- ones &* UInt64(n)) & ~w & highBits != 0
    }

    /// Whether some byte of `w` equals `b`.
    @inline(__always)
    static func hasByte(_ w: UInt64, equalTo b: UInt8) -> Bool {
        hasByte(w ^ (ones &* UInt64(b)), lessThan: 1)
    }

    /// Advances past field-value bytes (HTAB, SP, VCHAR, obs-text). Words of SP/VCHAR/obs-text go
    /// eight at a time; HTAB (rare in values) drops to the table loop.
    @inline(__always)
    mutating func skipFieldValue() {
        while end - i >= 8 {
            let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            if Self.hasByte(w, lessThan: 0x20) || Self.hasByte(w, equalTo: 0x7F) { break }
            i &+= 8
        }
        skip(HTTPByteClass.fieldValue)
    }

    /// Advances past request-target bytes (VCHAR: 0x21–0x7E), eight at a time where possible.
    @inline(__always)
    mutating func skipTarget() {
        while end - i >= 8 {
            let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            if w & Self.highBits != 0 || Self.hasByte(w, lessThan: 0x21) || Self.hasByte(w, equalTo: 0x7F) { break }
            i &+= 8
        }
        skip(HTTPByteClass.target)
    }

    /// Consumes CRLF or a bare LF. A CR not followed by LF, or any other byte, is an error.
    @inline(__always)
    mutating func lineEnd(_ what: String) throws(HTTPParseError) {
        if i < end && p[i] == UInt8(ascii: "\n") {
            i += 1
        } else if i + 1 < end && p[i] == UInt8(ascii: "\r") && p[i + 1] == UInt8(ascii: "\n") {
            i += 2
        } else if i < end && p[i] == UInt8(ascii: "\r") {
            throw fail("bare CR")
        } else {
            throw fail(what)
        }
    }

    /// Reads `HTTP/d.d` at the cursor and returns (major, minor); garbage is an error.
    @inline(__always)
    mutating func version() throws(HTTPParseError) -> (UInt8, UInt8) {
        guard end - i >= 8,
              p[i] == UInt8(ascii: "H"), p[i + 1] == UInt8(ascii: "T"), p[i + 2] == UInt8(ascii: "T"),
              p[i + 3] == UInt8(ascii: "P"), p[i + 4] == UInt8(ascii: "/"),
              has(p[i + 5], HTTPByteClass.digit), p[i + 6] == UInt8(ascii: "."), has(p[i + 7], HTTPByteClass.digit)
        else { throw fail("invalid HTTP version") }
        let major = p[i + 5] &- 0x30, minor = p[i + 7] &- 0x30
        i += 8
        return (major, minor)
    }

    /// `method SP request-target SP HTTP-version CRLF`, after any leading empty lines.
    mutating func requestLine(limits: HeadLimits) throws(HTTPParseError) -> RequestLine {
        // HeadAccumulator already drops leading empty lines; tolerate them here as well so direct
        // callers get the same answer (RFC 9112 §2.2).
        while true {
            if i < end && p[i] == UInt8(ascii: "\n") { i += 1 }
            else if i + 1 < end && p[i] == UInt8(ascii: "\r") && p[i + 1] == UInt8(ascii: "\n") { i += 2 }
            else { break }
        }
        guard i < end else { throw fail("invalid method") }  // only empty lines: keep `skip` in bounds
        let methodStart = i
        skip(HTTPByteClass.tchar)
        guard i > methodStart, i < end, p[i] == UInt8(ascii: " ") else { throw fail("invalid method") }
        let method = methodStart..<i
        i += 1

        let targetStart = i
        skipTarget()
        let target = targetStart..<i
        if target.count > limits.maxTargetBytes { throw HTTPParseError(status: 414, reason: "URI Too Long") }
        guard !target.isEmpty, i < end, p[i] == UInt8(ascii: " ") else { throw fail("invalid request target") }
        i += 1

        let (major, minor) = try version()
        try lineEnd("invalid request line")
        guard major == 1, minor <= 1 else {
            throw HTTPParseError(status: 505, reason: "HTTP Version Not Supported")
        }
        return RequestLine(method: method, target: target, versionMinor: minor)
    }

    /// `HTTP-version SP 3DIGIT [SP reason-phrase] CRLF`. Lenient only where it cannot affect framing:
    /// the reason (and the SP before it) may be missing.
    mutating func statusLine() throws(HTTPParseError) -> StatusLine {
        let (major, minor) = try version()
        guard major == 1, minor <= 1 else { throw fail("unsupported HTTP version") }
        guard end - i >= 4, p[i] == UInt8(ascii: " "),
              has(p[i + 1], HTTPByteClass.digit), has(p[i + 2], HTTPByteClass.digit), has(p[i + 3], HTTPByteClass.digit)
        else { throw fail("invalid status line") }
        let status = UInt16(p[i + 1] &- 0x30) * 100 + UInt16(p[i + 2] &- 0x30) * 10 + UInt16(p[i + 3] &- 0x30)
        guard status >= 100 else { throw fail("invalid status code") }
        i += 4
        var reason = i..<i
        if i < end && p[i] == UInt8(ascii: " ") {
            i += 1
            let start = i
            skipFieldValue()
            reason = start..<i
        }
        try lineEnd("invalid status line")
        return StatusLine(status: status, reason: reason, versionMinor: minor)
    }

    /// Field lines up to and including the empty line that ends the head.
    mutating func fields(into fields: inout [HeaderField], maxCount: Int, summary: inout FieldSummary) throws(HTTPParseError) {
        while true {
            guard i < end else { throw fail("incomplete head") }
            let first = p[i]
            if first == UInt8(ascii: "\r") || first == UInt8(ascii: "\n") {
                try lineEnd("bare CR")
                return  // Anything after the empty line is not part of this head.
            }
            if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
                // RFC 9112 §5.2: obs-fold, or whitespace between the start line and the first field.
                throw fail("obsolete line folding")
            }

            let nameStart = i
            skip(HTTPByteClass.tchar)
            guard i > nameStart, i < end, p[i] == UInt8(ascii: ":") else { throw fail("invalid header name") }
            let name = nameStart..<i
            i += 1

            skip(HTTPByteClass.whitespace)
            let valueStart = i
            skipFieldValue()
            var valueEnd = i
            while valueEnd > valueStart && has(p[valueEnd - 1], HTTPByteClass.whitespace) { valueEnd -= 1 }
            try lineEnd("invalid byte in header value")

            if fields.count >= maxCount {
                throw HTTPParseError(status: errorStatus == 400 ? 431 : errorStatus,
                                     reason: errorStatus == 400 ? "Request Header Fields Too Large"
                                                                : "Bad Gateway: too many header fields")
            }
            let value = valueStart..<valueEnd
            try interpret(name: name, value: value, index: fields.count, summary: &summary)
            fields.append(HeaderField(name: name, value: value))
        }
    }

    // MARK: Field semantics

    /// Whether the bytes in `range` equal `literal` (lower case) ignoring ASCII case.
    ///
    /// Eight bytes at a time, lower-cased by setting bit 5 (`| 0x20`). That is exact here, not
    /// only for letters: the bytes were validated before (names are tchar, values field-value
    /// bytes), and the literals hold lower-case letters, digits, `-` and `/`, whose only other
    /// preimages under `| 0x20` are control bytes (CR for `-`, 0x0F for `/`, 0x10–0x19 for
    /// digits) that validation already refused.
    @inline(__always)
    func equalsLower(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        let n = range.count
        guard n == literal.utf8CodeUnitCount else { return false }
        let a = UnsafeRawPointer(p + range.lowerBound)
        let b = UnsafeRawPointer(literal.utf8Start)
        var k = 0
        while k &+ 8 <= n {
            if a.loadUnaligned(fromByteOffset: k, as: UInt64.self) | 0x2020_2020_2020_2020
                != b.loadUnaligned(fromByteOffset: k, as: UInt64.self) { return false }
            k &+= 8
        }
        while k < n {
            if a.load(fromByteOffset: k, as: UInt8.self) | 0x20 != b.load(fromByteOffset: k, as: UInt8.self) { return false }
            k &+= 1
        }
        return true
    }

    /// Records what the framing/connection headers say. Dispatches on the name length first, so
    /// most fields cost one comparison.
    @inline(__always)
    func interpret(name: Range<Int>, value: Range<Int>, index: Int, summary: inout FieldSummary) throws(HTTPParseError) {
        switch name.count {
        case 4 where equalsLower(name, "host"):
            summary.hostCount += 1
            summary.hostField = index
        case 12 where equalsLower(name, "x-request-id"):
            summary.requestIDField = index
        case 3 where equalsLower(name, "via"):
            summary.hasVia = true
        case 12 where equalsLower(name, "content-type"):
            // Recorded here so that no one searches the fields for it again per response; the
            // first such field counts, as a search would find.
            if !summary.sawContentType {
                summary.sawContentType = true
                summary.isEventStream = value.count >= 17 && equalsLower(value.lowerBound..<(value.lowerBound + 17), "text/event-stream")
            }
        case 10 where equalsLower(name, "keep-alive"):
            if summary.keepAliveField == nil { summary.keepAliveField = index }
        case 5 where equalsLower(name, "close"):
            summary.hasCloseField = true
        case 6 where equalsLower(name, "expect"):
            if equalsLower(value, "100-continue") { summary.expectsContinue = true }
        case 10 where equalsLower(name, "connection"):
            forEachListElement(value) { element in
                if equalsLower(element, "close") { summary.connectionClose = true }
                else if equalsLower(element, "keep-alive") { summary.connectionKeepAlive = true }
                else if equalsLower(element, "upgrade") { summary.connectionUpgrade = true }
                else if !element.isEmpty { summary.connectionNamesOthers = true }
            }
        case 14 where equalsLower(name, "content-length"):
            try contentLength(value, summary: &summary)
        case 17 where equalsLower(name, "transfer-encoding"):
            summary.hasTransferEncoding = true
            // Several fields combine into one list (RFC 9110 §5.3); only a single `chunked` is accepted.
            if value.isEmpty { summary.otherCodings = true }
            forEachListElement(value) { element in
                if equalsLower(element, "chunked") { summary.chunkedCount += 1 }
                else { summary.otherCodings = true }
            }
        default:
            break
        }
    }

    /// Calls `body` with each comma-separated element of `value`, OWS trimmed (empty ones included).
    @inline(__always)
    func forEachListElement(_ value: Range<Int>, _ body: (Range<Int>) -> Void) {
        guard !value.isEmpty else { return }
        var start = value.lowerBound
        while true {
            var stop = start
            while stop < value.upperBound && p[stop] != UInt8(ascii: ",") { stop += 1 }
            var a = start, b = stop
            while a < b && has(p[a], HTTPByteClass.whitespace) { a += 1 }
            while b > a && has(p[b - 1], HTTPByteClass.whitespace) { b -= 1 }
            body(a..<b)
            if stop == value.upperBound { return }
            start = stop + 1
        }
    }

    /// `Content-Length = 1*DIGIT`, or a list of identical values (RFC 9110 §8.6). Every occurrence
    /// must agree with the ones before it; empty, signed, non-digit and overflowing values are refused.
    func contentLength(_ value: Range<Int>, summary: inout FieldSummary) throws(HTTPParseError) {
        var k = value.lowerBound
        while true {
            while k < value.upperBound && has(p[k], HTTPByteClass.whitespace) { k += 1 }
            let digitsStart = k
            var n: UInt64 = 0
            while k < value.upperBound && has(p[k], HTTPByteClass.digit) {
                // 19 digits always fit a UInt64; Int64.max is checked below.
                guard k - digitsStart < 19 else { throw fail("Content-Length too large") }
                n = n &* 10 &+ UInt64(p[k] &- 0x30)
                k += 1
            }
            guard k > digitsStart else { throw fail("invalid Content-Length") }
            guard n <= UInt64(Int64.max) else { throw fail("Content-Length too large") }
            if let previous = summary.contentLength, previous != n {
                throw fail("conflicting Content-Length values")
            }
            summary.contentLength = n
            while k < value.upperBound && has(p[k], HTTPByteClass.whitespace) { k += 1 }
            if k == value.upperBound { return }
            guard p[k] == UInt8(ascii: ",") else { throw fail("invalid Content-Length") }
            k += 1
        }
    }
}
