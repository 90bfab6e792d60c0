/// Request-target forms (RFC 9112 §3.2), the `Host` syntax (RFC 9110 §7.2), and the one
/// dot-segment check the proxy makes on what it forwards.
///
/// Accepted: origin-form (`/path?query`), `*` for OPTIONS, and absolute-form
/// (`http://host/path` or `https://…`, forwarded as its origin-form part; its authority stands for `Host`,
/// RFC 9112 §3.2.2). Everything else — authority-form (CONNECT), relative paths, other schemes,
/// userinfo (`http://user@host/`) — is refused. Routing looks at the normal form of the path
/// (`PathNormalizer`), but the target is forwarded byte-exact by default, because the backend must
/// see what the client sent (signed URLs depend on it); only a literal `..` that would climb above
/// `/` is refused, since backends that do resolve it would then serve something outside their root.
public enum RequestTarget {
    /// What to forward for a valid target.
    public enum Form: Equatable {
        /// Forward this byte range of the head (origin-form, or the path part of an absolute URI;
        /// an empty range means "/").
        case path(Range<Int>)
        /// absolute-form: forward `path` (as for `.path`); `authority` (`host[:port]`, checked
        /// like a `Host` value) is the host the request is for, whatever `Host` says.
        case absolute(path: Range<Int>, authority: Range<Int>)
        /// `*` (OPTIONS only).
        case asterisk
    }

    /// Validates the request target of `head`; errors carry status 400. `inout` only to pass
    /// a stored head by address (see `HeaderRewriter.writeUpstreamRequest`); not modified.
    public static func validate(_ head: inout RequestHead) throws(HTTPParseError) -> Form {
        let b = head.bytes
        let t = head.target
        guard let first = t.first.map({ b[$0] }) else { throw HTTPParseError(status: 400, reason: "empty request target") }
        if first == UInt8(ascii: "*") {
            guard t.count == 1, b.equals(head.method, "OPTIONS") else {
                throw HTTPParseError(status: 400, reason: "\"*\" is a request target for OPTIONS only")
            }
            return .asterisk
        }
        if first == UInt8(ascii: "/") {
            try checkDotSegments(b, t)
            return .path(t)
        }
        // absolute-form: http://authority[/path][?query] (or https://, which clients send to a
        // TLS listener; the scheme only names how the client reached the proxy)
        var scheme = t.lowerBound..<min(t.lowerBound + 7, t.upperBound)
        if !b.equalsIgnoringCase(scheme, "http://") {
            scheme = t.lowerBound..<min(t.lowerBound + 8, t.upperBound)
            guard b.equalsIgnoringCase(scheme, "https://") else {
                throw HTTPParseError(status: 400, reason: "request target must start with \"/\", \"http://\" or \"https://\"")
            }
        }
        var i = scheme.upperBound
        while i < t.upperBound && b[i] != UInt8(ascii: "/") && b[i] != UInt8(ascii: "?") { i += 1 }
        let authority = scheme.upperBound..<i
        guard !authority.isEmpty else { throw HTTPParseError(status: 400, reason: "absolute request target without a host") }
        if b[authority].contains(UInt8(ascii: "@")) {
            // RFC 9110 §4.2.4: userinfo is deprecated in http URIs; `http://trusted@evil/` misleads.
            throw HTTPParseError(status: 400, reason: "userinfo (\"user@\") in the request target")
        }
        try checkHost(b, authority, in: "the request target's host")
        let path = i..<t.upperBound
        try checkDotSegments(b, path)
        return .absolute(path: path, authority: authority)
    }

    /// Checks a `Host` value, or the authority of an absolute-form target (`in` names which, for
    /// the message): `host[:port]`, where host is a name or IPv4 address made of unreserved
    /// characters (letters, digits, `-._~`; no empty label, one trailing dot allowed) or an IPv6
    /// address in brackets, and port is 1–5 digits up to 65535. That is RFC 3986's authority
    /// without userinfo, percent-escapes and sub-delims — none of which a real host name has, and
    /// all of which (`x@host`, `a,b`, `a/b`) a backend or a log could read differently from the
    /// router. Errors carry status 400.
    public static func checkHost(_ b: [UInt8], _ value: Range<Int>, in what: StaticString = "Host") throws(HTTPParseError) {
        // Almost every Host is a plain name or IPv4 address with an optional port: accepted in one
        // pass here. Anything else — IPv6, or an error to explain — takes the careful path below.
        if isPlainHost(b, value) { return }
        func fail(_ problem: String) -> HTTPParseError {
            HTTPParseError(status: 400, reason: "invalid \(what): \(problem)")
        }
        guard !value.isEmpty else { throw fail("empty") }
        var i = value.lowerBound
        let end = value.upperBound
        if b[i] == UInt8(ascii: "[") {
            i += 1
            let start = i
            var colons = 0
            while i < end, isHexDigit(b[i]) || b[i] == UInt8(ascii: ":") || b[i] == UInt8(ascii: ".") {
                if b[i] == UInt8(ascii: ":") { colons += 1 }
                i += 1
            }
            guard i < end, b[i] == UInt8(ascii: "]") else {
                throw fail(b[start..<end].contains(UInt8(ascii: "]")) ? "not an IPv6 address in brackets" : "unclosed \"[\"")
            }
            guard colons >= 2, isIPv6Address(b, start..<i) else { throw fail("not an IPv6 address in brackets") }
            i += 1
        } else {
            let start = i
            while i < end && isNameByte(b[i]) {
                // No empty label: ".x", "a..b", "." are not names.
                if b[i] == UInt8(ascii: "."), i == start || b[i - 1] == UInt8(ascii: ".") { throw fail("empty label in the host name") }
                i += 1
            }
            guard i > start else { throw fail(hostProblem(b[i])) }
        }
        guard i < end else { return }
        guard b[i] == UInt8(ascii: ":") else { throw fail(hostProblem(b[i])) }
        i += 1
        var port = 0, digits = 0
        while i < end && b[i] >= UInt8(ascii: "0") && b[i] <= UInt8(ascii: "9") {
            port = port * 10 + Int(b[i] &- 0x30)
            digits += 1
            if digits > 5 { break }
            i += 1
        }
        guard i == end, digits >= 1, port <= 65535 else { throw fail("the port must be a number from 0 to 65535") }
    }

    /// What is wrong with a host that stops at `c`.
    /// RFC 3986 `IPv6address`: eight groups of 1–4 hex digits separated by `:`, the last two
    /// optionally written as a dotted IPv4 address, and at most one `::` standing for one or
    /// more zero groups. (Characters alone are not enough: `[1::2::3]` and `[1:2:3]` are not
    /// addresses.)
    static func isIPv6Address(_ b: [UInt8], _ range: Range<Int>) -> Bool {
        var groups = 0
        var sawDoubleColon = false
        var i = range.lowerBound
        let end = range.upperBound
        if i + 1 < end && b[i] == UInt8(ascii: ":") && b[i + 1] == UInt8(ascii: ":") {
            sawDoubleColon = true
            i += 2
            if i == end { return true }  // "::"
        } else if i < end && b[i] == UInt8(ascii: ":") {
            return false  // a single leading colon
        }
        while i < end {
            // One piece: hex digits, or a dotted IPv4 address as the last piece.
            let pieceStart = i
            while i < end && isHexDigit(b[i]) { i += 1 }
            if i < end && b[i] == UInt8(ascii: ".") {
                guard isIPv4Address(b, pieceStart..<end) else { return false }
                groups += 2
                i = end
                break
            }
            let digits = i - pieceStart
            guard digits >= 1 && digits <= 4 else { return false }
            groups += 1
            if i == end { break }
            guard b[i] == UInt8(ascii: ":") else { return false }
            i += 1
            if i < end && b[i] == UInt8(ascii: ":") {
                guard !sawDoubleColon else { return false }
                sawDoubleColon = true
                i += 1
                if i == end { break }  // trailing "::"
            } else if i == end {
                return false  // a single trailing colon
            }
        }
        return sawDoubleColon ? groups <= 7 : groups == 8
    }

    /// A dotted-decimal IPv4 address: four numbers 0–255, no leading zeros.
    private static func isIPv4Address(_ b: [UInt8], _ range: Range<Int>) -> Bool {
        var parts = 0
        var i = range.lowerBound
        while parts < 4 {
            let start = i
            var value = 0
            while i < range.upperBound && b[i] >= UInt8(ascii: "0") && b[i] <= UInt8(ascii: "9") && i - start < 3 {
                value = value * 10 + Int(b[i] - UInt8(ascii: "0"))
                i += 1
            }
            let digits = i - start
            guard digits >= 1, value <= 255, digits == 1 || b[start] != UInt8(ascii: "0") else { return false }
            parts += 1
            if parts < 4 {
                guard i < range.upperBound, b[i] == UInt8(ascii: ".") else { return false }
                i += 1
            }
        }
        return i == range.upperBound
    }

    /// `reg-name [":" port]` with no empty label and a port of 1 to 5 digits, at most 65535.
    /// False for everything else (which `checkHost` then examines in full).
    private static func isPlainHost(_ b: [UInt8], _ value: Range<Int>) -> Bool {
        guard value.lowerBound >= 0, value.upperBound <= b.count, !value.isEmpty else { return false }
        return b.withUnsafeBufferPointer { buf -> Bool in
            let p = buf.baseAddress!
            var i = value.lowerBound
            let end = value.upperBound
            var previous = UInt8(ascii: ".")  // so a leading dot is an empty label
            while i < end {
                let c = p[i]
                // Digits and letters first: nearly every byte is one.
                if c &- UInt8(ascii: "0") >= 10 && (c | 0x20) &- UInt8(ascii: "a") >= 26 {
                    if c == UInt8(ascii: ".") {
                        if previous == UInt8(ascii: ".") { return false }
                    } else if c == UInt8(ascii: ":") {
                        break
                    } else if c != UInt8(ascii: "-") && c != UInt8(ascii: "_") && c != UInt8(ascii: "~") {
                        return false
                    }
                }
                previous = c
                i &+= 1
            }
            if i == value.lowerBound { return false }  // no host before the port
            if i == end { return true }
            i &+= 1  // the colon
            let digits = end &- i
            guard digits >= 1 && digits <= 5 else { return false }
            var port = 0
            while i < end {
                let d = p[i] &- UInt8(ascii: "0")
                if d >= 10 { return false }
                port = port &* 10 &+ Int(d)
                i &+= 1
            }
            return port <= 65535
        }
    }

    private static func hostProblem(_ c: UInt8) -> String {
        switch c {
        case UInt8(ascii: "@"): "userinfo (\"user@\") is not allowed"
        case UInt8(ascii: ","): "a list of hosts is not allowed"
        case UInt8(ascii: "/"), UInt8(ascii: "\\"): "a path is not allowed"
        case UInt8(ascii: " "), UInt8(ascii: "\t"): "spaces are not allowed"
        case UInt8(ascii: "]"): "unopened \"]\""
        case UInt8(ascii: ":"): "no host before the port"
        default: "only letters, digits, \"-._~\", an [IPv6] address and a :port are allowed"
        }
    }

    /// RFC 3986 unreserved: ALPHA DIGIT "-" "." "_" "~".
    @inline(__always)
    private static func isNameByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
            || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~")
    }

    @inline(__always)
    private static func isHexDigit(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (asciiLower(c) >= UInt8(ascii: "a") && asciiLower(c) <= UInt8(ascii: "f"))
    }

    /// Refuses a path whose literal `..` segments climb above the root.
    static func checkDotSegments(_ b: [UInt8], _ path: Range<Int>) throws(HTTPParseError) {
        var depth = 0
        var i = path.lowerBound
        let end = path.upperBound
        while i < end && b[i] != UInt8(ascii: "?") {
            // Each segment starts after a '/'.
            if b[i] == UInt8(ascii: "/") { i += 1 }
            let start = i
            while i < end && b[i] != UInt8(ascii: "/") && b[i] != UInt8(ascii: "?") { i += 1 }
            let length = i - start
            if length == 2 && b[start] == UInt8(ascii: ".") && b[start + 1] == UInt8(ascii: ".") {
                depth -= 1
                if depth < 0 { throw HTTPParseError(status: 400, reason: "request target climbs above \"/\" with \"..\"") }
            } else if !(length == 1 && b[start] == UInt8(ascii: ".")) && length > 0 {
                depth += 1
            }
        }
    }
}
