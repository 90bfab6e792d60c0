/// A route's `compress` made ready for the loop (`CompressionConfig`): the media types as bytes,
/// the codings in order of preference. Decides, for each response, whether it is compressed and
/// how its head changes. Pure: no I/O, tested on heads alone.
///
/// The rules, in order (a response failing one goes as the backend sent it):
/// 1. not for `HEAD`, and not for 1xx, 204, 206 or 304 (no body, or a byte range of the
///    identity representation);
/// 2. the backend did not encode it (`Content-Encoding` absent or `identity`);
/// 3. its media type is listed (`text/event-stream` only by its own name);
/// 4. no `Cache-Control: no-transform` (RFC 9110 §7.7);
/// 5. a `Content-Length` is at least `min_bytes` (an unknown length qualifies).
/// Such a response varies by `Accept-Encoding` whether or not this client takes a coding, so it
/// gets `Vary: Accept-Encoding` (caches must not hand a compressed copy to a client that cannot
/// read it). It is compressed when the client accepts one of `encodings` and speaks HTTP/1.1
/// or HTTP/2 (an HTTP/1.0 client would need the connection closed to end the body, as nginx's
/// `gzip_http_version 1.1` default also avoids).
///
/// Ownership: the route (immutable; shared by the exchanges that use it). Threading: any.
final class ResponseCompression {
    let config: CompressionConfig
    /// `type/subtype` patterns, lower-case; an empty subtype stands for `*`.
    private let patterns: [(type: [UInt8], subtype: [UInt8])]
    private let preference: [ContentCoding]

    init(_ config: CompressionConfig) {
        self.config = config
        patterns = config.types.map { text in
            let parts = text.lowercased().split(separator: "/", maxSplits: 1)
            let subtype = parts.count > 1 && parts[1] != "*" ? Array(parts[1].utf8) : []
            return (Array(parts[0].utf8), subtype)
        }
        preference = config.encodings.compactMap { name in ContentCoding.allCases.first { $0.token == name } }
    }

    /// What to do with one response.
    struct Decision: Equatable {
        /// Add `Vary: Accept-Encoding` (the response could have been compressed).
        var vary = false
        /// The coding to apply (nil: send as is).
        var coding: ContentCoding?
    }

    /// For `HEAD` the answer is at most `vary` (the head a `GET` would get says it varies; the
    /// coding itself is not announced for a body that is not sent).
    func decide(_ request: RequestHead, _ response: ResponseHead) -> Decision {
        let status = response.status
        if status < 200 || status == 204 || status == 205 || status == 206 || status == 304 { return Decision() }
        if !request.isHEAD {
            switch response.framing {
            case .none: return Decision()
            case .contentLength(let n) where n < UInt64(config.minBytes): return Decision()
            default: break
            }
        }
        let b = response.bytes
        var typeMatched = false
        for field in response.fields {
            let name = field.name
            switch name.count {
            case 14 where request.isHEAD && b.equalsIgnoringCase(name, "content-length"):
                if let n = UInt64(b.string(field.value).trimmingSpacesAndTabs), n < UInt64(config.minBytes) { return Decision() }
            case 16 where b.equalsIgnoringCase(name, "content-encoding"):
                if !Self.isIdentity(b, field.value) { return Decision() }
            case 12 where b.equalsIgnoringCase(name, "content-type"):
                typeMatched = matchesType(b, field.value)
            case 13 where b.equalsIgnoringCase(name, "cache-control"):
                if Self.contains(b, field.value, "no-transform") { return Decision() }
            // A digest of the body as sent would no longer match it.
            case 6 where b.equalsIgnoringCase(name, "digest"), 11 where b.equalsIgnoringCase(name, "content-md5"),
                 11 where b.equalsIgnoringCase(name, "repr-digest"), 14 where b.equalsIgnoringCase(name, "content-digest"):
                return Decision()
            default: break
            }
        }
        guard typeMatched else { return Decision() }
        guard !request.isHEAD, request.isHTTP2 || request.versionMinor == 1 else { return Decision(vary: true) }
        let accepted = AcceptedCodings(request)
        for coding in preference {
            switch coding {
            case .brotli where accepted.brotli: return Decision(vary: true, coding: .brotli)
            case .gzip where accepted.gzip: return Decision(vary: true, coding: .gzip)
            default: continue
            }
        }
        return Decision(vary: true)
    }

    /// A 304 for a client that holds a compressed 200: its validators must match what that 200
    /// said (RFC 9110 §15.4.5), so its strong `ETag` is made weak and `Vary: Accept-Encoding`
    /// added. A 304 rarely names its type; what tells is the client's `If-None-Match` holding the
    /// weak form of the 304's strong tag — the form only this weakening makes.
    func notModifiedDecision(_ request: RequestHead, _ response: ResponseHead) -> Decision {
        guard response.status == 304, request.isHTTP2 || request.versionMinor == 1,
              let e = response.fieldIndex("etag"), let n = request.fieldIndex("if-none-match") else { return Decision() }
        let tag = response.bytes.string(response.fields[e].value).trimmingSpacesAndTabs
        guard tag.hasPrefix("\""), request.bytes.string(request.fields[n].value).contains("W/" + tag) else { return Decision() }
        let accepted = AcceptedCodings(request)
        guard let coding = preference.first(where: { ($0 == .brotli && accepted.brotli) || ($0 == .gzip && accepted.gzip) }) else { return Decision() }
        return Decision(vary: true, coding: coding)
    }

    /// The compressor for `coding` at the configured level; nil if the library refuses.
    func makeCompressor(_ coding: ContentCoding, sizeHint: UInt64?, onRelease: (() -> Void)?) -> StreamCompressor? {
        StreamCompressor(coding: coding, level: coding == .gzip ? config.gzipLevel : config.brotliLevel,
                         brotliWindowBits: config.brotliWindowBits, sizeHint: sizeHint, onRelease: onRelease)
    }

    /// `head` as the client gets it: with `coding`, no `Content-Length` or `Accept-Ranges` (the
    /// length and the byte ranges were the identity body's), its strong `ETag` made weak (the
    /// compressed bytes are not the ones it names; RFC 9110 §8.8.1), `Content-Encoding` and
    /// chunked framing; with `vary`, `Accept-Encoding` added to `Vary` unless already there (or
    /// `*`). The head is rebuilt and parsed again (only for responses this changes); the
    /// backend's keep-alive verdict is kept.
    /// For a 304 (`headOnly`), only the validators and `Vary` change.
    static func rewrite(_ head: inout ResponseHead, _ decision: Decision, headOnly: Bool = false) throws(HTTPParseError) {
        guard decision.vary || decision.coding != nil else { return }
        let b = head.bytes
        var out: [UInt8] = []
        out.reserveCapacity(b.count + 64)
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        out.append(contentsOf: String(head.status).utf8)
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: b[head.reason])
        out.append(contentsOf: "\r\n".utf8)
        // Any `Vary` field already naming it (or `*`) is enough: not added to another one.
        var varyDone = !decision.vary || head.fields.contains { b.equalsIgnoringCase($0.name, "vary")
            && (hasToken(b, $0.value, "accept-encoding") || hasToken(b, $0.value, "*")) }
        let compressing = decision.coding != nil
        // Fields the backend named in `Connection` are hop-by-hop, dropped on the way to the
        // client — by name, which would drop the proxy's own `Content-Encoding` or `Vary` too.
        // They go here instead, and `Connection` with them (only `close` matters further on).
        var named: Set<String> = []
        var closes = false
        for field in head.fields where b.equalsIgnoringCase(field.name, "connection") {
            for token in b.string(field.value).split(separator: ",") {
                let t = token.trimmingSpacesAndTabs.lowercased()
                if t == "close" { closes = true } else if t != "keep-alive" { named.insert(t) }
            }
        }
        if closes { out.append(contentsOf: "Connection: close\r\n".utf8) }
        for field in head.fields {
            let name = field.name
            if b.equalsIgnoringCase(name, "connection") { continue }
            if !named.isEmpty && named.contains(b.string(name).lowercased()) { continue }
            var value = Array(b[field.value])
            if compressing && headOnly {
                if b.equalsIgnoringCase(name, "etag"), value.first == UInt8(ascii: "\"") { value = Array("W/".utf8) + value }
            } else if compressing {
                if b.equalsIgnoringCase(name, "content-length") || b.equalsIgnoringCase(name, "accept-ranges")
                    || b.equalsIgnoringCase(name, "transfer-encoding") || b.equalsIgnoringCase(name, "content-encoding") { continue }
                if b.equalsIgnoringCase(name, "etag"), value.first == UInt8(ascii: "\"") { value = Array("W/".utf8) + value }
            }
            if !varyDone && b.equalsIgnoringCase(name, "vary") {
                varyDone = true
                value += value.isEmpty ? Array("Accept-Encoding".utf8) : Array(", Accept-Encoding".utf8)
            }
            out.append(contentsOf: b[name])
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: value)
            out.append(contentsOf: "\r\n".utf8)
        }
        if !varyDone { out.append(contentsOf: "Vary: Accept-Encoding\r\n".utf8) }
        if let coding = decision.coding, !headOnly {
            out.append(contentsOf: "Content-Encoding: \(coding.token)\r\nTransfer-Encoding: chunked\r\n".utf8)
        }
        out.append(contentsOf: "\r\n".utf8)
        let keepAlive = head.keepAlive
        let versionMinor = head.versionMinor
        let eventStream = head.isEventStream
        var rebuilt = ResponseHead(bytes: out)
        try HeadParser.parseResponse(into: &rebuilt, requestWasHEAD: headOnly)
        rebuilt.keepAlive = keepAlive
        rebuilt.versionMinor = versionMinor
        rebuilt.isEventStream = eventStream
        head = rebuilt
    }

    // MARK: Helpers

    /// Whether the media type of a `Content-Type` value is one of `patterns`.
    private func matchesType(_ b: [UInt8], _ value: Range<Int>) -> Bool {
        var i = value.lowerBound
        while i < value.upperBound && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
        let typeStart = i
        while i < value.upperBound && b[i] != UInt8(ascii: "/") { i += 1 }
        let type = typeStart..<i
        guard i < value.upperBound else { return false }
        i += 1
        let subStart = i
        while i < value.upperBound && b[i] != UInt8(ascii: ";") && b[i] != 0x20 && b[i] != 0x09 { i += 1 }
        let subtype = subStart..<i
        let isEventStream = b.equalsIgnoringCase(type, "text") && b.equalsIgnoringCase(subtype, "event-stream")
        for pattern in patterns where Self.equalsLower(b, type, pattern.type) {
            if pattern.subtype.isEmpty {
                if !isEventStream { return true }
            } else if Self.equalsLower(b, subtype, pattern.subtype) {
                return true
            }
        }
        return false
    }

    private static func equalsLower(_ b: [UInt8], _ range: Range<Int>, _ lower: [UInt8]) -> Bool {
        guard range.count == lower.count else { return false }
        var j = 0
        for i in range {
            if asciiLower(b[i]) != lower[j] { return false }
            j += 1
        }
        return true
    }

    private static func isIdentity(_ b: [UInt8], _ value: Range<Int>) -> Bool {
        var v = value
        while let f = v.first, b[f] == 0x20 || b[f] == 0x09 { v = v.dropFirst() }
        while let l = v.last, b[l] == 0x20 || b[l] == 0x09 { v = v.dropLast() }
        return v.isEmpty || b.equalsIgnoringCase(v, "identity")
    }

    /// Whether the comma-separated list `b[value]` has the element `token` (lower-case), ignoring
    /// ASCII case and spaces around elements.
    private static func hasToken(_ b: [UInt8], _ value: Range<Int>, _ token: StaticString) -> Bool {
        var start = value.lowerBound
        while start <= value.upperBound {
            var end = start
            while end < value.upperBound && b[end] != UInt8(ascii: ",") { end += 1 }
            var element = start..<end
            while let f = element.first, b[f] == 0x20 || b[f] == 0x09 { element = element.dropFirst() }
            while let l = element.last, b[l] == 0x20 || b[l] == 0x09 { element = element.dropLast() }
            if b.equalsIgnoringCase(element, token) { return true }
            start = end + 1
        }
        return false
    }

    /// Whether `b[value]` holds `token` (lower-case), ignoring ASCII case.
    private static func contains(_ b: [UInt8], _ value: Range<Int>, _ token: StaticString) -> Bool {
        let n = token.utf8CodeUnitCount
        guard value.count >= n else { return false }
        let t = token.utf8Start
        var i = value.lowerBound
        while i + n <= value.upperBound {
            var j = 0
            while j < n && asciiLower(b[i + j]) == t[j] { j += 1 }
            if j == n { return true }
            i += 1
        }
        return false
    }
}
