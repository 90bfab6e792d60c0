import Glibc

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
struct HTTP2RequestHeadBuilder: ~Copyable {
    /// The first problem found; the request is answered with it once its header block ended.
    private(set) var problem: HTTPParseError?
    /// RFC 9113 §6.5.2 size of the header list so far.
    private(set) var listBytes = 0

    /// The pseudo-fields' and `host`'s values, one after the other; where each one is.
    private var values = ByteBuffer(capacity: 256)
    private var method: Range<Int> = 0..<0
    private var path: Range<Int> = 0..<0
    private var authority: Range<Int> = 0..<0
    private var host: Range<Int>?
    private var scheme: Range<Int>?
    /// Cookie crumbs joined with "; ".
    private var cookies = ByteBuffer(capacity: 64)
    /// The regular fields as HTTP/1.1 field lines.
    private var lines = ByteBuffer(capacity: 512)
    private var hasContentLength = false

    init() {}

    /// Forgets everything (the builder is reused by the stream's next request). Buffers that
    /// grew past a few KiB are let go.
    mutating func reset() {
        problem = nil
        listBytes = 0
        values.removeAll(retainedCapacity: 4096)
        method = 0..<0
        path = 0..<0
        authority = 0..<0
        host = nil
        scheme = nil
        cookies.removeAll(retainedCapacity: 4096)
        lines.removeAll(retainedCapacity: 4096)
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
            if Self.equals(name, ":method") { method = keep(value) }
            else if Self.equals(name, ":path") { path = keep(value) }
            else if Self.equals(name, ":authority") { authority = keep(value) }
            else if Self.equals(name, ":scheme") { scheme = keep(value) }
            else { fail("unknown pseudo-header field \(String(decoding: name, as: UTF8.self))") }
            return
        }
        switch name.count {
        case 4 where Self.equals(name, "host"):
            if host != nil { return fail("more than one host field") }
            host = keep(value)
            return
        case 6 where Self.equals(name, "cookie"):
            // RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
            if !cookies.isEmpty { cookies.append("; ") }
            cookies.append(raw: value)
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
        lines.append(raw: name)
        lines.append(": ")
        lines.append(raw: value)
        lines.append("\r\n")
    }

    /// Copies a pseudo-field's (or host's) value into `values`; where it is.
    private mutating func keep(_ value: UnsafeRawBufferPointer) -> Range<Int> {
        let start = values.count
        values.append(raw: value)
        return start..<values.count
    }

    /// The header block ended: writes the HTTP/1.1 head into `head.bytes` and parses it.
    /// `hasBody`: DATA frames follow (END_STREAM was not on the headers); a body without
    /// `content-length` is sent on as chunked.
    func build(into head: inout RequestHead, hasBody: Bool, limits: HeadLimits) throws(HTTPParseError) {
        if let problem { throw problem }
        if method.isEmpty { throw Self.badRequest("no :method") }
        let isConnect = values.withUnsafeBytes { Self.equals(UnsafeRawBufferPointer(rebasing: $0[method]), "CONNECT") }
        if isConnect {
            throw HTTPParseError(status: 501, reason: "Not Implemented: CONNECT over HTTP/2 is not supported by this proxy")
        }
        guard let scheme, !path.isEmpty else { throw Self.badRequest("a request needs :scheme and :path") }
        // RFC 9113 §8.3.1: this proxy serves http and https only (another scheme would let
        // :path carry an absolute URI of its choosing).
        let knownScheme = values.withUnsafeBytes { v in
            let s = UnsafeRawBufferPointer(rebasing: v[scheme])
            return Self.equals(s, "https") || Self.equals(s, "http")
        }
        if !knownScheme { throw Self.badRequest(":scheme is neither http nor https") }
        let hostValue: Range<Int>
        if let host {
            if !authority.isEmpty && !values.withUnsafeBytes({ $0[host].elementsEqual($0[authority]) }) {
                throw Self.badRequest(":authority and Host disagree")
            }
            hostValue = authority.isEmpty ? host : authority
        } else {
            hostValue = authority
        }
        if hostValue.isEmpty { throw Self.badRequest("no :authority or Host") }

        // Written in one pass into a new array of the exact size: one allocation, and a
        // `memcpy` per piece (appending to the old array cost ~250 instructions per piece).
        let requestLineEnd: StaticString = " HTTP/1.1\r\nHost: "
        let cookieName: StaticString = "cookie: "
        let chunked: StaticString = "transfer-encoding: chunked\r\n"
        let addsChunked = hasBody && !hasContentLength
        let total = method.count + 1 + path.count + requestLineEnd.utf8CodeUnitCount + hostValue.count + 2 + lines.count
            + (cookies.isEmpty ? 0 : cookieName.utf8CodeUnitCount + cookies.count + 2)
            + (addsChunked ? chunked.utf8CodeUnitCount : 0) + 2
        head.bytes = [UInt8](unsafeUninitializedCapacity: total) { out, written in
            var at = out.baseAddress!
            func put(_ piece: UnsafeRawBufferPointer) {
                guard let source = piece.baseAddress, piece.count > 0 else { return }
                memcpy(at, source, piece.count)
                at += piece.count
            }
            func put(_ literal: StaticString) { put(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)) }
            let crlf: StaticString = "\r\n"
            values.withUnsafeBytes { v in
                put(UnsafeRawBufferPointer(rebasing: v[method]))
                put(" ")
                put(UnsafeRawBufferPointer(rebasing: v[path]))
                put(requestLineEnd)
                put(UnsafeRawBufferPointer(rebasing: v[hostValue]))
                put(crlf)
            }
            lines.withUnsafeBytes { put($0) }
            if !cookies.isEmpty {
                put(cookieName)
                cookies.withUnsafeBytes { put($0) }
                put(crlf)
            }
            if addsChunked { put(chunked) }
            put(crlf)
            written = at - out.baseAddress!
        }
        // The HTTP/1 head limit applies to the head as the backend gets it.
        if head.bytes.count > limits.maxHeadBytes {
            throw HTTPParseError(status: 431, reason: "Request Header Fields Too Large: the request head is over \(limits.maxHeadBytes) bytes (limits.max_head_bytes)")
        }
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

    /// A field name (or a pseudo-field's): lowercase token characters (RFC 9110 §5.6.2), with
    /// one leading colon for pseudo-fields.
    private static func isValidName(_ name: UnsafeRawBufferPointer) -> Bool {
        guard let base = name.baseAddress, name.count > 0 else { return false }
        var i = base.load(as: UInt8.self) == UInt8(ascii: ":") ? 1 : 0
        while i < name.count {
            if !isLowercaseTokenByte(base.load(fromByteOffset: i, as: UInt8.self)) { return false }
            i += 1
        }
        return true
    }

    /// RFC 9110 §5.6.2 `tchar` without A–Z, as two 64-bit masks (bytes 0–63 and 64–127):
    /// `!#$%&'*+-.^_`|~`, digits and lowercase letters.
    @inline(__always)
    private static func isLowercaseTokenByte(_ c: UInt8) -> Bool {
        let lowMask: UInt64 = 0x03ff_6cfa_0000_0000, highMask: UInt64 = 0x57ff_ffff_c000_0000
        if c < 64 { return lowMask >> UInt64(c) & 1 != 0 }
        if c < 128 { return highMask >> UInt64(c &- 64) & 1 != 0 }
        return false
    }

    private static func isValidValue(_ value: UnsafeRawBufferPointer) -> Bool {
        !value.contains { $0 == 0 || $0 == 10 || $0 == 13 }
    }
}
