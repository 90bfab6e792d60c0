/// The normal form of a request path, for routing (RFC 3986 §6.2.2): what a backend that decodes
/// and resolves the path will see, so a route cannot be bypassed with `/public/../admin`,
/// `//admin`, `/%61dmin` or `/%2e%2e/admin`.
///
/// 1. Percent-escapes are checked: a `%` not followed by two hex digits, or `%00`, is refused (400).
///    Escapes of unreserved characters (ALPHA DIGIT `-` `.` `_` `~`) are decoded; every other escape
///    stays encoded, with upper-case hex digits (`%2f` → `%2F`).
/// 2. Encoded slashes (`%2F`) and backslashes (`%5C`) follow `escapedSlashes` — Envoy's
///    `path_with_escaped_slashes_action`: `keep` (the default) leaves them encoded, part of their
///    segment; `reject` refuses the request (400); `decode` turns both into `/` (as Envoy's
///    `UNESCAPE_AND_FORWARD` followed by its path normalisation does), so they split segments.
/// 3. With `mergeSlashes`, runs of `/` become one (nginx's `merge_slashes`), before step 4.
/// 4. Dot segments are removed (RFC 3986 §5.2.4, `remove_dot_segments`); `..` at the root stays
///    at the root.
///
/// The query (from the first `?`) is never touched. Works on bytes, no `String`: a path that is
/// already normal — nearly all of them — costs one scan and no allocation; only a path that changes
/// is written out, at the end of the caller's byte array (the request head's own buffer, reused
/// request after request), so the result is a range of that array like every other part of the head.
/// Pure: knows nothing of configuration or I/O.
public struct PathNormalizer: Sendable, Equatable {
    public enum EscapedSlashes: Sendable, Equatable {
        case keep, reject, decode
    }

    public var mergeSlashes: Bool
    public var escapedSlashes: EscapedSlashes

    public init(mergeSlashes: Bool = true, escapedSlashes: EscapedSlashes = .keep) {
        self.mergeSlashes = mergeSlashes
        self.escapedSlashes = escapedSlashes
    }

    /// Where the normal form is.
    public struct Result: Equatable, Sendable {
        /// The normal path, without the query.
        public var path: Range<Int>
        /// The normal path followed by the original query (`?…`, if any): the target to forward
        /// when the normal form is forwarded.
        public var target: Range<Int>
        /// The path changed: both ranges lie past the bytes that were there before the call.
        /// Otherwise they are the caller's own `target` and its path part.
        public var rewritten: Bool
    }

    /// Normalises the path part of `target`, an origin-form target (`/path?query`, or an empty or
    /// `?…` path, meaning `/`) within `bytes`. Errors carry status 400.
    ///
    /// When the path needs rewriting, its normal form and the query are appended to `bytes`
    /// (whose existing ranges stay valid); `bytes` is otherwise not modified.
    public func normalize(_ bytes: inout [UInt8], target: Range<Int>) throws(HTTPParseError) -> Result {
        let scan = try bytes.withUnsafeBufferPointer { buf throws(HTTPParseError) in try check(buf, target) }
        guard scan.rewrite else {
            return Result(path: target.lowerBound..<scan.pathEnd, target: target, rewritten: false)
        }
        // Room for the path and the query: decoding and dot removal only ever shrink the path.
        let outStart = bytes.count
        let room = target.count
        bytes.append(contentsOf: repeatElement(0, count: room))
        let pathLength = bytes.withUnsafeMutableBufferPointer { buf in
            let p = buf.baseAddress!
            let decodedEnd = decode(p, target.lowerBound..<scan.pathEnd, to: outStart)
            let pathEnd = removeDotSegments(p, outStart..<decodedEnd)
            // The query, unchanged, right behind the path.
            var i = scan.pathEnd, o = pathEnd
            while i < target.upperBound { p[o] = p[i]; o += 1; i += 1 }
            return pathEnd - outStart
        }
        let queryLength = target.upperBound - scan.pathEnd
        bytes.removeLast(room - pathLength - queryLength)
        return Result(path: outStart..<(outStart + pathLength), target: outStart..<bytes.count, rewritten: true)
    }

    // MARK: - Scan

    private struct Scan {
        /// End of the path: the first `?`, or the end of the target.
        var pathEnd: Int
        /// Something must change.
        var rewrite: Bool
    }

    /// One pass over the path: refuses what is invalid and tells whether anything must change.
    private func check(_ p: UnsafeBufferPointer<UInt8>, _ target: Range<Int>) throws(HTTPParseError) -> Scan {
        let start = target.lowerBound, end = target.upperBound
        var rewrite = false
        var i = start
        var segmentStart = start
        while i < end {
            let c = p[i]
            if c == UInt8(ascii: "?") { break }
            if c == UInt8(ascii: "#") {
                // RFC 9112 §3.2: a request target has no fragment. Forwarded raw, a backend that
                // drops it would serve another path than the one routes (and policies) saw.
                throw HTTPParseError(status: 400, reason: "a fragment (#) is not allowed in the request target")
            }
            if c == UInt8(ascii: "/") {
                try checkPathParameters(p, segmentStart, i, last: false)
                if isDotSegment(p, segmentStart, i) { rewrite = true }
                if mergeSlashes && i > start && p[i - 1] == UInt8(ascii: "/") { rewrite = true }
                segmentStart = i + 1
            } else if c == UInt8(ascii: "%") {
                guard end - i >= 3, let hi = hexValue(p[i + 1]), let lo = hexValue(p[i + 2]) else {
                    throw HTTPParseError(status: 400, reason: "invalid percent-encoding in the request path")
                }
                let value = hi << 4 | lo
                if value == 0 { throw HTTPParseError(status: 400, reason: "encoded NUL (%00) in the request path") }
                if value == UInt8(ascii: "/") || value == UInt8(ascii: "\\") {
                    switch escapedSlashes {
                    case .reject:
                        throw HTTPParseError(status: 400, reason: "encoded slash (%2F) or backslash (%5C) in the request path")
                    case .decode: rewrite = true
                    case .keep: break
                    }
                }
                if isUnreserved(value) || isLowerHex(p[i + 1]) || isLowerHex(p[i + 2]) { rewrite = true }
                i += 3
                continue
            }
            i += 1
        }
        try checkPathParameters(p, segmentStart, i, last: true)
        if isDotSegment(p, segmentStart, i) { rewrite = true }
        return Scan(pathEnd: i, rewrite: rewrite)
    }

    /// Servlet containers drop a segment's `;parameters` before resolving dot segments, so
    /// `/x/..;/admin` and `/;/admin` are `/admin` to them while routes see other paths: a dot
    /// segment with parameters, or an empty one with parameters before another segment, is
    /// refused (an empty last one, `/;jsessionid=…`, is what URL rewriting produces and is kept).
    private func checkPathParameters(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, last: Bool) throws(HTTPParseError) {
        var semicolon = start
        while semicolon < end && p[semicolon] != UInt8(ascii: ";") { semicolon += 1 }
        guard semicolon < end else { return }
        // The part before `;`, its escaped dots counted as dots.
        var dots = 0, other = false
        var i = start
        while i < semicolon {
            if p[i] == UInt8(ascii: ".") { dots += 1; i += 1; continue }
            if p[i] == UInt8(ascii: "%"), semicolon - i >= 3, p[i + 1] == UInt8(ascii: "2"), p[i + 2] | 0x20 == UInt8(ascii: "e") {
                dots += 1; i += 3; continue
            }
            other = true
            break
        }
        if !other && (dots == 1 || dots == 2 || (dots == 0 && !last)) {
            throw HTTPParseError(status: 400, reason: "path parameters (;) on an empty or dot segment of the request path")
        }
    }

    // MARK: - Rewrite

    /// Copies `p[path]` to `p[out...]` with escapes decoded or upper-cased; returns the end.
    /// `out` lies past `path`, so the two regions never overlap.
    private func decode(_ p: UnsafeMutablePointer<UInt8>, _ path: Range<Int>, to out: Int) -> Int {
        var i = path.lowerBound, o = out
        while i < path.upperBound {
            let c = p[i]
            guard c == UInt8(ascii: "%") else { p[o] = c; o += 1; i += 1; continue }
            // Checked by the scan: two hex digits follow.
            let value = hexValue(p[i + 1])! << 4 | hexValue(p[i + 2])!
            if isUnreserved(value) {
                p[o] = value
                o += 1
            } else if escapedSlashes == .decode && (value == UInt8(ascii: "/") || value == UInt8(ascii: "\\")) {
                p[o] = UInt8(ascii: "/")
                o += 1
            } else {
                p[o] = UInt8(ascii: "%")
                p[o + 1] = upperHex(value >> 4)
                p[o + 2] = upperHex(value & 0xF)
                o += 3
            }
            i += 3
        }
        return o
    }

    /// RFC 3986 §5.2.4 over `p[path]` in place (plus merging of empty segments when
    /// `mergeSlashes`); returns the new end. The output never runs ahead of the input.
    private func removeDotSegments(_ p: UnsafeMutablePointer<UInt8>, _ path: Range<Int>) -> Int {
        let start = path.lowerBound, end = path.upperBound
        var r = start, w = start
        // An origin-form path starts with "/"; anything before a first "/" is kept as it is.
        while r < end && p[r] != UInt8(ascii: "/") { p[w] = p[r]; w += 1; r += 1 }
        while r < end {
            r += 1  // the "/" that opens this segment
            let segment = r
            while r < end && p[r] != UInt8(ascii: "/") { r += 1 }
            let length = r - segment
            let last = r == end
            if length == 1 && p[segment] == UInt8(ascii: ".") {
                // "/a/./b" → "/a/b"; a final "/." leaves "/a/".
            } else if length == 2 && p[segment] == UInt8(ascii: ".") && p[segment + 1] == UInt8(ascii: ".") {
                // Drop the last output segment and its "/" ("/a/b/.." → "/a/"; "/.." → "/").
                while w > start && p[w - 1] != UInt8(ascii: "/") { w -= 1 }
                if w > start { w -= 1 }
            } else if length == 0 && mergeSlashes && !last {
                continue  // "//": the empty segment goes
            } else {
                p[w] = UInt8(ascii: "/")
                w += 1
                var k = segment
                while k < r { p[w] = p[k]; w += 1; k += 1 }
                continue
            }
            if last { p[w] = UInt8(ascii: "/"); w += 1 }
        }
        return w
    }

    // MARK: - Bytes

    @inline(__always)
    private func isDotSegment(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        switch end - start {
        case 1: return p[start] == UInt8(ascii: ".")
        case 2: return p[start] == UInt8(ascii: ".") && p[start + 1] == UInt8(ascii: ".")
        default: return false
        }
    }

    @inline(__always)
    private func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c &- 0x30
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c &- 0x37
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c &- 0x57
        default: nil
        }
    }

    @inline(__always)
    private func isLowerHex(_ c: UInt8) -> Bool { c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f") }

    @inline(__always)
    private func upperHex(_ v: UInt8) -> UInt8 { v < 10 ? v &+ 0x30 : v &+ 0x37 }

    /// RFC 3986 §2.3: ALPHA DIGIT "-" "." "_" "~".
    @inline(__always)
    private func isUnreserved(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
            || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~")
    }
}
