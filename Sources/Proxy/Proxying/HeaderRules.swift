/// A route's `request_headers` or `response_headers` compiled for the head writers: the
/// lowercase names whose fields are dropped (removed ones, and set ones, which replace), and the
/// fields to add, their values split into literal bytes and placeholders.
///
/// Threading: immutable; built with the route, used on its worker's loop.
struct CompiledHeaderRules {
    enum Part {
        case literal([UInt8])
        case clientIP, requestID, host
    }

    /// Lowercase names of the fields not passed on.
    let dropped: [[UInt8]]
    /// `SecurityHeaders.present` bits of the names these rules set or remove: `security_headers`
    /// leaves those to the rules (a rule's value, or its removal, stands).
    let securityCovered: UInt8
    let assignments: [(name: [UInt8], value: [Part])]

    init?(_ config: HeaderRulesConfig?) {
        guard let config, !config.isEmpty else { return nil }
        dropped = (config.remove + config.assignments.map(\.name)).map { Array($0.lowercased().utf8) }
        securityCovered = dropped.reduce(0) { $0 | SecurityHeaders.present($1, 0..<$1.count) }
        assignments = config.assignments.map { a in (name: Array(a.name.utf8), value: Self.parts(a.value)) }
    }

    /// `text` split at its placeholders (the loader has checked them).
    private static func parts(_ text: String) -> [Part] {
        var parts: [Part] = []
        var literal: [UInt8] = []
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            literal += Array(rest[..<open].utf8)
            let part: Part? = switch rest[rest.index(after: open)..<close] {
            case "client_ip": .clientIP
            case "request_id": .requestID
            case "host": .host
            default: nil
            }
            if let part {
                if !literal.isEmpty { parts.append(.literal(literal)); literal = [] }
                parts.append(part)
            } else {
                literal += Array(rest[open...close].utf8)
            }
            rest = rest[rest.index(after: close)...]
        }
        literal += Array(rest.utf8)
        if !literal.isEmpty { parts.append(.literal(literal)) }
        return parts
    }

    /// Whether the field named `name` (a range of `b`) is not passed on.
    /// Whether the field named `name` (a range of `b`) goes. A name spelled with `_` for `-`
    /// goes too: CGI-style backends (PHP-FPM, WSGI, Rack) read `X_User_Id` as `X-User-Id`, so a
    /// client could otherwise slip in a copy of a field the rules set (a forwarded claim).
    func drops(_ b: [UInt8], _ name: Range<Int>) -> Bool {
        dropped.contains { d in
            guard d.count == name.count else { return false }
            var i = name.lowerBound
            for c in d {
                var x = b[i]
                if x >= 65 && x <= 90 { x |= 0x20 }
                if x != c && !(x == UInt8(ascii: "_") && c == UInt8(ascii: "-")) { return false }
                i += 1
            }
            return true
        }
    }

    /// What the placeholders stand for in one exchange.
    struct Context {
        var clientIP: [UInt8]
        var requestID: [UInt8]
        /// The request's `Host` value (empty when it had none).
        var host: ArraySlice<UInt8>
    }

    /// A value with its placeholders filled in.
    func value(_ parts: [Part], _ context: Context) -> [UInt8] {
        var out: [UInt8] = []
        for part in parts {
            switch part {
            case .literal(let bytes): out += bytes
            case .clientIP: out += context.clientIP
            case .requestID: out += context.requestID
            case .host: out += context.host
            }
        }
        return out
    }

    func append(into out: inout ByteBuffer, _ context: Context) {
        for a in assignments {
            out.append(contentsOf: a.name)
            out.append(": ")
            out.append(contentsOf: value(a.value, context))
            out.append("\r\n")
        }
    }

    func append(into list: inout HTTP2FieldList, _ context: Context) {
        for a in assignments {
            let v = value(a.value, context)
            list.append(lowercasedName: a.name, 0..<a.name.count, value: v, 0..<v.count)
        }
    }
}

/// What the response writers apply for a route: its `response_headers`, `security_headers`, and
/// what the placeholders stand for. Built per response only where the route has such rules.
struct ResponsePolicy {
    var rules: CompiledHeaderRules?
    var securityHeaders: Bool
    /// The client connection is TLS (security headers then add HSTS).
    var secure: Bool
    var context: CompiledHeaderRules.Context
    /// The route's `cors`: the backend's `Access-Control-*` fields are replaced by these, and
    /// `Vary: Origin` is added.
    var cors: CORS?

    struct CORS {
        /// `Access-Control-Allow-Origin`'s value: the request's origin (or `*`), nil when it
        /// sent none or one not allowed.
        var allowOrigin: [UInt8]?
        var credentials: Bool
        var exposeHeaders: [UInt8]
    }

    /// Whether the backend's field `name` is replaced by the proxy's CORS fields.
    static func isCORSField(_ b: [UInt8], _ name: Range<Int>) -> Bool {
        name.count > 15 && equalsLowercase(b, name.lowerBound..<(name.lowerBound + 15), accessControl)
    }
    private static let accessControl = Array("access-control-".utf8)

    func appendCORS(into out: inout ByteBuffer) {
        guard let cors else { return }
        out.append("Vary: Origin\r\n")
        guard let origin = cors.allowOrigin else { return }
        out.appendField("Access-Control-Allow-Origin", origin)
        if cors.credentials { out.append("Access-Control-Allow-Credentials: true\r\n") }
        if !cors.exposeHeaders.isEmpty { out.appendField("Access-Control-Expose-Headers", cors.exposeHeaders) }
    }

    func appendCORS(into list: inout HTTP2FieldList) {
        guard let cors else { return }
        list.append(name: "vary", value: Array("Origin".utf8))
        guard let origin = cors.allowOrigin else { return }
        list.append(name: "access-control-allow-origin", value: origin)
        if cors.credentials { list.append(name: "access-control-allow-credentials", value: Array("true".utf8)) }
        if !cors.exposeHeaders.isEmpty { list.append(name: "access-control-expose-headers", value: cors.exposeHeaders) }
    }
}

/// `security_headers: true`: fields added to a response that does not carry them (the backend
/// knows better when it sends its own).
enum SecurityHeaders {
    static let fields: [(lower: [UInt8], name: StaticString, h2Name: StaticString, value: StaticString)] = [
        (Array("x-content-type-options".utf8), "X-Content-Type-Options", "x-content-type-options", "nosniff"),
        (Array("referrer-policy".utf8), "Referrer-Policy", "referrer-policy", "strict-origin-when-cross-origin"),
        (Array("x-frame-options".utf8), "X-Frame-Options", "x-frame-options", "SAMEORIGIN"),
    ]
    /// On TLS, when the listener's `hsts` does not set one already (a year, as the listener's
    /// `hsts: true` does not say more either).
    static let hsts = (lower: Array("strict-transport-security".utf8), name: "Strict-Transport-Security" as StaticString,
                       h2Name: "strict-transport-security" as StaticString, value: "max-age=31536000" as StaticString)

    /// Bit `i` set: the response carries `fields[i]` (bit 3: HSTS).
    static func present(_ b: [UInt8], _ name: Range<Int>) -> UInt8 {
        for (i, f) in fields.enumerated() where equalsLowercase(b, name, f.lower) { return 1 << i }
        return equalsLowercase(b, name, hsts.lower) ? 1 << 3 : 0
    }
}

/// Whether `b[name]` is `lower` ignoring ASCII case (`lower` is lowercase).
@inline(__always)
func equalsLowercase(_ b: [UInt8], _ name: Range<Int>, _ lower: [UInt8]) -> Bool {
    guard name.count == lower.count else { return false }
    var i = name.lowerBound
    for c in lower {
        let x = b[i]
        if (x >= 65 && x <= 90 ? x | 0x20 : x) != c { return false }
        i += 1
    }
    return true
}
