/// Request-target forms (RFC 9112 §3.2) and the one normalisation check the proxy makes.
///
/// Accepted: origin-form (`/path?query`), `*` for OPTIONS, and absolute-form
/// (`http://host/path`, forwarded as its origin-form part). Everything else — authority-form
/// (CONNECT), relative paths, other schemes — is refused. The target is otherwise forwarded
/// byte-exact: no percent-decoding, no dot-segment removal, because the backend must see what
/// the client sent; only a literal `..` that would climb above `/` is refused, since backends
/// that do resolve it would then serve something outside their root.
public enum RequestTarget {
    /// What to forward for a valid target.
    public enum Form: Equatable {
        /// Forward this byte range of the head (origin-form, or the path part of an absolute URI;
        /// an empty range means "/").
        case path(Range<Int>)
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
        var path = t
        if first != UInt8(ascii: "/") {
            // absolute-form: http://authority[/path][?query]
            let scheme = t.lowerBound..<min(t.lowerBound + 7, t.upperBound)
            guard b.equalsIgnoringCase(scheme, "http://") else {
                throw HTTPParseError(status: 400, reason: "request target must start with \"/\" or \"http://\"")
            }
            var i = scheme.upperBound
            while i < t.upperBound && b[i] != UInt8(ascii: "/") && b[i] != UInt8(ascii: "?") { i += 1 }
            guard i > scheme.upperBound else { throw HTTPParseError(status: 400, reason: "absolute request target without a host") }
            path = i..<t.upperBound
        }
        try checkDotSegments(b, path)
        return .path(path)
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
