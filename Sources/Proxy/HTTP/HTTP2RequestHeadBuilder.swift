/// Turns an HTTP/2 request's header fields into the `RequestHead` the rest of the proxy works on:
/// an HTTP/1.1 head (`METHOD PATH HTTP/1.1`, `Host` from `:authority`, the regular fields,
/// cookie crumbs joined), read back by `HeadParser` — so an HTTP/2 request meets exactly the
/// checks, limits, routing and rewriting an HTTP/1.1 one does.
///
/// nghttp2 has already refused what HTTP/2 forbids (uppercase names, CR/LF/NUL in names and
/// values, pseudo-fields after regular ones or repeated, connection-specific fields, `TE` other
/// than `trailers`, a body that disagrees with `content-length`). The builder checks the bytes it
/// copies once more anyway — a head it writes must never carry a line break it did not put
/// there — and adds what HTTP/2 leaves to the server: `:authority` and `Host` must agree, one of
/// them must be there, and the header list has a size limit (RFC 9113 §6.5.2 counting).
///
/// Threading: a value owned by one stream, loop thread only.
struct HTTP2RequestHeadBuilder {
    /// The first problem found; the request is answered with it once its header block ended.
    private(set) var problem: HTTPParseError?
    /// RFC 9113 §6.5.2 size of the header list so far.
    private(set) var listBytes = 0

    private var method: [UInt8] = []
    private var path: [UInt8] = []
    private var authority: [UInt8] = []
    private var hasScheme = false
    private var host: [UInt8]?
    private var cookies: [UInt8] = []
    /// The regular fields as HTTP/1.1 field lines.
    private var lines: [UInt8] = []
    private var hasContentLength = false

    init() {}

    /// Forgets everything (the builder is reused by the stream's next request).
    mutating func reset() {
        problem = nil
        listBytes = 0
        method.removeAll(keepingCapacity: true)
        path.removeAll(keepingCapacity: true)
        authority.removeAll(keepingCapacity: true)
        hasScheme = false
        host = nil
        cookies.removeAll(keepingCapacity: true)
        lines.removeAll(keepingCapacity: true)
        hasContentLength = false
    }

    /// Adds one field of the request's header block. `maxListBytes`: beyond it the request
    /// becomes a 431 (the fields after are only counted).
    mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, maxListBytes: Int) {
        listBytes += name.count + value.count + 32
        guard problem == nil else { return }
        if listBytes > maxListBytes {
            problem = HTTPParseError(status: 431, reason: "Request Header Fields Too Large: the header list is over \(maxListBytes) bytes (http2.max_header_list_bytes)")
            return
        }
        guard Self.isValidName(name) else { return fail("a header field name is not a lowercase token") }
        guard Self.isValidValue(value) else { return fail("a header field value holds CR, LF or NUL") }
        if name.first == UInt8(ascii: ":") {
            if Self.equals(name, ":method") { method = Array(value) }
            else if Self.equals(name, ":path") { path = Array(value) }
            else if Self.equals(name, ":authority") { authority = Array(value) }
            else if Self.equals(name, ":scheme") { hasScheme = true }
            else { fail("unknown pseudo-header field \(String(decoding: name, as: UTF8.self))") }
            return
        }
        switch name.count {
        case 4 where Self.equals(name, "host"):
            if host != nil { return fail("more than one host field") }
            host = Array(value)
            return
        case 6 where Self.equals(name, "cookie"):
            // RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
            if !cookies.isEmpty { cookies.append(contentsOf: "; ".utf8) }
            cookies.append(contentsOf: value)
            return
        case 2 where Self.equals(name, "te"):
            guard Self.equals(value, "trailers") else { return fail("TE other than \"trailers\"") }
            return  // hop-by-hop: not forwarded
        case 10 where Self.equals(name, "connection") || Self.equals(name, "keep-alive"):
            return fail("connection-specific field \(String(decoding: name, as: UTF8.self))")
        case 7 where Self.equals(name, "upgrade"):
            return fail("connection-specific field upgrade")
        case 16 where Self.equals(name, "proxy-connection"):
            return fail("connection-specific field proxy-connection")
        case 17 where Self.equals(name, "transfer-encoding"):
            return fail("transfer-encoding in an HTTP/2 request")
        case 14 where Self.equals(name, "content-length"):
            hasContentLength = true
        default:
            break
        }
        lines.append(contentsOf: name)
        lines.append(contentsOf: ": ".utf8)
        lines.append(contentsOf: value)
        lines.append(contentsOf: "\r\n".utf8)
    }

    /// The header block ended: writes the HTTP/1.1 head into `head.bytes` and parses it.
    /// `hasBody`: DATA frames follow (END_STREAM was not on the headers); a body without
    /// `content-length` is sent on as chunked.
    func build(into head: inout RequestHead, hasBody: Bool, limits: HeadLimits) throws(HTTPParseError) {
        if let problem { throw problem }
        if method.isEmpty { throw Self.badRequest("no :method") }
        if Self.equals(method, "CONNECT") {
            throw HTTPParseError(status: 501, reason: "Not Implemented: CONNECT over HTTP/2 is not supported by this proxy")
        }
        if path.isEmpty || !hasScheme { throw Self.badRequest("a request needs :scheme and :path") }
        if let host, !authority.isEmpty, host != authority {
            throw Self.badRequest(":authority and Host disagree")
        }
        let hostValue = authority.isEmpty ? (host ?? []) : authority
        if hostValue.isEmpty { throw Self.badRequest("no :authority or Host") }

        head.bytes.removeAll(keepingCapacity: true)
        head.bytes.reserveCapacity(method.count + path.count + hostValue.count + lines.count + cookies.count + 64)
        head.bytes.append(contentsOf: method)
        head.bytes.append(UInt8(ascii: " "))
        head.bytes.append(contentsOf: path)
        head.bytes.append(contentsOf: " HTTP/1.1\r\nHost: ".utf8)
        head.bytes.append(contentsOf: hostValue)
        head.bytes.append(contentsOf: "\r\n".utf8)
        head.bytes.append(contentsOf: lines)
        if !cookies.isEmpty {
            head.bytes.append(contentsOf: "cookie: ".utf8)
            head.bytes.append(contentsOf: cookies)
            head.bytes.append(contentsOf: "\r\n".utf8)
        }
        if hasBody && !hasContentLength { head.bytes.append(contentsOf: "transfer-encoding: chunked\r\n".utf8) }
        head.bytes.append(contentsOf: "\r\n".utf8)
        try HeadParser.parseRequest(into: &head, limits: limits)
        head.isHTTP2 = true
    }

    private mutating func fail(_ reason: String) {
        if problem == nil { problem = Self.badRequest(reason) }
    }

    private static func badRequest(_ reason: String) -> HTTPParseError {
        HTTPParseError(status: 400, reason: "Bad Request: \(reason)")
    }

    private static func equals(_ bytes: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount else { return false }
        let t = text.utf8Start
        for i in 0..<bytes.count where bytes[i] != t[i] { return false }
        return true
    }

    private static func equals(_ bytes: [UInt8], _ text: StaticString) -> Bool {
        bytes.withUnsafeBytes { equals($0, text) }
    }

    /// A field name (or a pseudo-field's): lowercase token characters (RFC 9110 §5.6.2), with
    /// one leading colon for pseudo-fields.
    private static func isValidName(_ name: UnsafeRawBufferPointer) -> Bool {
        guard !name.isEmpty else { return false }
        for (i, c) in name.enumerated() {
            if c == UInt8(ascii: ":") && i == 0 { continue }
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): continue
            case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
                 UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
                 UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): continue
            default: return false
            }
        }
        return true
    }

    private static func isValidValue(_ value: UnsafeRawBufferPointer) -> Bool {
        !value.contains { $0 == 0 || $0 == 10 || $0 == 13 }
    }
}
