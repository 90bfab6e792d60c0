/// Serialises the heads the proxy sends: the request to the upstream and the response to the
/// client. Runs on the loop thread, straight from the parsed head's byte spans into an output
/// buffer — no `String`, no per-header allocation.
///
/// Both directions drop the hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and every field it
/// names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
/// Framing fields are never copied: the proxy writes its own `Content-Length` or
/// `Transfer-Encoding: chunked` for the framing it actually uses on that hop.
public struct HeaderRewriter {
    /// Connection-named tokens of the head being rewritten (capacity reused between requests).
    private var connectionTokens: [Range<Int>] = []

    public init() {
        connectionTokens.reserveCapacity(8)
    }

    /// How the proxy frames a body on the hop it is writing.
    public enum OutgoingFraming: Equatable {
        case none
        case contentLength(UInt64)
        case chunked
        /// Body runs until the proxy closes the connection (HTTP/1.0 clients).
        case untilClose
    }

    // MARK: Request → upstream

    /// Appends the request head for the upstream to `out`.
    ///
    /// - `peerIP`: the client's address, appended to `X-Forwarded-For` and sent as `X-Real-IP`.
    /// - `defaultHost`: sent as `Host` when the client sent none (HTTP/1.0), since the upstream
    ///   hop is HTTP/1.1, where `Host` is mandatory.
    /// - `target`: the part of the request target to forward (origin-form; for an absolute-form
    ///   target its path; after `strip_prefix` what follows the prefix). Empty, or starting with
    ///   `?`, gets a leading "/".
    /// - `hostOverride`: the `Host` to send instead of the client's (a route's `host_header`).
    /// - `forwardedPrefix`: sent as `X-Forwarded-Prefix` (the prefix a route stripped).
    /// - `upgrade`: keep the `Upgrade` field and send `Connection: upgrade` (WebSocket and other
    ///   protocol switches; the caller has checked the request asks for one).
    ///
    /// `head` is `inout` only to be passed by address — the caller's head is a stored property,
    /// and a by-value argument from one is copied (a retain and release of each of its arrays);
    /// it is not modified. The same holds for `writeClientResponse`.
    mutating func writeUpstreamRequest(_ head: inout RequestHead, framing: OutgoingFraming,
                                              peerIP: [UInt8], peerIsIPv6: Bool? = nil, clientIP: [UInt8]? = nil,
                                              defaultHost: [UInt8] = [], target: Range<Int>? = nil,
                                              hostOverride: [UInt8]? = nil, forwardedPrefix: [UInt8] = [],
                                              upgrade: Bool = false, requestID: [UInt8] = [], secure: Bool = false,
                                              rules: CompiledHeaderRules? = nil, extraFields: [UInt8] = [],
                                              into out: inout ByteBuffer) {
        let b = head.bytes
        out.append(b, head.method)
        out.append(UInt8(ascii: " "))
        let path = target ?? head.target
        if path.isEmpty || b[path.lowerBound] == UInt8(ascii: "?") { out.append(UInt8(ascii: "/")) }
        out.append(b, path)
        out.append(" HTTP/1.1\r\n")
        if let hostOverride {
            out.append("Host: ")
            out.append(contentsOf: hostOverride)
            out.append("\r\n")
        } else if head.hostField == nil && !defaultHost.isEmpty {
            out.append("Host: ")
            out.append(contentsOf: defaultHost)
            out.append("\r\n")
        }
        collectConnectionTokens(b, head.fields, namesOthers: head.connectionNamesOthers)
        var sawForwardedFor = false
        var sentTrailers = false
        for field in head.fields {
            let name = field.name
            if isFramingField(b, name) { continue }
            if let rules, rules.drops(b, name) { continue }
            if name.count == 2 && b.equalsIgnoringCase(name, "te") {
                // Hop-by-hop, but `TE: trailers` says the client can take trailers; pass that on.
                if !sentTrailers && containsToken(b, field.value, "trailers") {
                    out.append("TE: trailers\r\nConnection: TE\r\n")
                    sentTrailers = true
                }
                continue
            }
            // Host is never hop-by-hop, whatever `Connection` names: the upstream hop needs it.
            if name.count == 4 && b.equalsIgnoringCase(name, "host") {
                if hostOverride == nil { appendField(b, field, into: &out) }
                continue
            }
            if upgrade && name.count == 7 && b.equalsIgnoringCase(name, "upgrade") { appendField(b, field, into: &out); continue }
            if isHopByHop(b, name) || isConnectionNamed(b, name) { continue }
            if b.equalsIgnoringCase(name, "x-forwarded-for") { sawForwardedFor = true; continue }
            // RFC 7239's `Forwarded` says what `X-Forwarded-*` say: replaced the same way.
            if name.count == 9 && b.equalsIgnoringCase(name, "forwarded") { continue }
            // The proxy states these itself: a client must not be able to forge them.
            if b.equalsIgnoringCase(name, "x-real-ip") || b.equalsIgnoringCase(name, "x-forwarded-proto")
                || b.equalsIgnoringCase(name, "x-forwarded-host") || b.equalsIgnoringCase(name, "x-forwarded-prefix") { continue }
            // The proxy writes the request id it settled on (the client's, when well-formed).
            if !requestID.isEmpty && name.count == 12 && b.equalsIgnoringCase(name, "x-request-id") { continue }
            appendField(b, field, into: &out)
        }
        appendFraming(framing, into: &out)
        // Several X-Forwarded-For fields form one list (RFC 9110 §5.3): fold them, then add the peer.
        out.append("X-Forwarded-For: ")
        if sawForwardedFor {
            for field in head.fields where !field.value.isEmpty && b.equalsIgnoringCase(field.name, "x-forwarded-for") {
                out.append(b, field.value)
                out.append(", ")
            }
        }
        out.append(contentsOf: peerIP)
        // The client a trusted proxy vouched for (`trusted_proxies`), else the peer.
        let client = clientIP ?? peerIP
        out.append("\r\nX-Real-IP: ")
        out.append(contentsOf: client)
        out.append(secure ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n")
        if let host = head.hostField {
            out.append("X-Forwarded-Host: ")
            out.append(b, head.fields[host].value)
            out.append("\r\n")
        }
        // RFC 7239 §4: an IPv6 node and a host with a port are quoted strings.
        let ipv6 = clientIP.map { $0.contains(UInt8(ascii: ":")) } ?? peerIsIPv6 ?? peerIP.contains(UInt8(ascii: ":"))
        out.append(ipv6 ? "Forwarded: for=\"[" : "Forwarded: for=")
        out.append(contentsOf: client)
        out.append(ipv6 ? (secure ? "]\";proto=https" : "]\";proto=http") : (secure ? ";proto=https" : ";proto=http"))
        if let host = head.hostField {
            out.append(";host=\"")
            out.append(b, head.fields[host].value)
            out.append("\"")
        }
        out.append("\r\nVia: 1.1 ")
        out.append(contentsOf: ProxyIdentity.viaName)
        out.append("\r\n")
        if !forwardedPrefix.isEmpty { out.appendField("X-Forwarded-Prefix", forwardedPrefix) }
        if upgrade { out.append("Connection: upgrade\r\n") }
        appendRequestID(requestID, into: &out)
        if let rules {
            rules.append(into: &out, .init(clientIP: client, requestID: requestID,
                                           host: head.hostField.map { b[head.fields[$0].value] } ?? []))
        }
        // Whole `Name: value\r\n` lines (a checked token's forwarded claims).
        if !extraFields.isEmpty { out.append(contentsOf: extraFields) }
        out.append("\r\n")
    }

    private func appendRequestID(_ id: [UInt8], into out: inout ByteBuffer) {
        guard !id.isEmpty else { return }
        out.appendField("X-Request-Id", id)
    }

    /// Whether `head` asks to switch protocols in a way the proxy tunnels: HTTP/1.1, `Connection`
    /// naming `upgrade`, and an `Upgrade` field that is not `h2c` (cleartext HTTP/2 needs the
    /// proxy to speak HTTP/2, so that one is stripped and the request served as HTTP/1.1).
    public func isTunnelableUpgrade(_ head: RequestHead) -> Bool {
        guard head.versionMinor == 1 else { return false }
        let b = head.bytes
        var connectionUpgrade = false, upgrade = false, h2c = false
        for field in head.fields {
            if b.equalsIgnoringCase(field.name, "connection") && containsToken(b, field.value, "upgrade") {
                connectionUpgrade = true
            } else if field.name.count == 7 && b.equalsIgnoringCase(field.name, "upgrade") && !field.value.isEmpty {
                upgrade = true
                if containsToken(b, field.value, "h2c") { h2c = true }
            }
        }
        return connectionUpgrade && upgrade && !h2c
    }

    /// Appends a `101 Switching Protocols` head for the client: end-to-end fields, the backend's
    /// `Upgrade`, and `Connection: upgrade`.
    public mutating func writeSwitchingProtocols(_ head: ResponseHead, into out: inout ByteBuffer) {
        let b = head.bytes
        writeStatusLine(head, into: &out)
        collectConnectionTokens(b, head.fields, namesOthers: head.connectionNamesOthers)
        for field in head.fields {
            let name = field.name
            if name.count == 7 && b.equalsIgnoringCase(name, "upgrade") { appendField(b, field, into: &out); continue }
            if isHopByHop(b, name) || isFramingField(b, name) || isConnectionNamed(b, name) { continue }
            appendField(b, field, into: &out)
        }
        out.append("Connection: upgrade\r\n\r\n")
    }

    // MARK: Response → client

    /// Appends the response head for the client to `out`.
    ///
    /// - `closeAfter`: the proxy will close the client connection after this response
    ///   (adds `Connection: close`); otherwise HTTP/1.0 clients get `Connection: keep-alive`.
    mutating func writeClientResponse(_ head: inout ResponseHead, framing: OutgoingFraming,
                                             clientVersionMinor: UInt8, closeAfter: Bool, requestID: [UInt8] = [],
                                             addedField: [UInt8]? = nil, policy: ResponsePolicy? = nil, into out: inout ByteBuffer) {
        let b = head.bytes
        writeStatusLine(head, into: &out)
        collectConnectionTokens(b, head.fields, namesOthers: head.connectionNamesOthers)
        let replacesSTS = addedField != nil
        var present: UInt8 = policy?.rules?.securityCovered ?? 0
        for field in head.fields {
            let name = field.name
            guard isEndToEndForClient(b, name, replacesSTS: replacesSTS, replacesRequestID: !requestID.isEmpty) else { continue }
            if let policy {
                if let rules = policy.rules, rules.drops(b, name) { continue }
                if policy.cors != nil && ResponsePolicy.isCORSField(b, name) { continue }
                if policy.securityHeaders { present |= SecurityHeaders.present(b, name) }
            }
            if b.equalsIgnoringCase(name, "content-length") {
                // A body-less response to HEAD, or a 304, keeps the length of the body it
                // describes; 1xx and 204 must not carry one at all (RFC 9110 §8.6).
                if case .none = framing, head.status >= 200, head.status != 204 { appendField(b, field, into: &out) }
                continue
            }
            appendField(b, field, into: &out)
        }
        appendFraming(framing, into: &out)
        appendRequestID(requestID, into: &out)
        if let addedField { out.append(contentsOf: addedField) }
        if let policy {
            policy.rules?.append(into: &out, policy.context)
            policy.appendCORS(into: &out)
            if policy.securityHeaders {
                for (i, f) in SecurityHeaders.fields.enumerated() where present & (1 << i) == 0 {
                    out.append(f.name)
                    out.append(": ")
                    out.append(f.value)
                    out.append("\r\n")
                }
                if policy.secure && !replacesSTS && present & (1 << 3) == 0 {
                    out.append(SecurityHeaders.hsts.name)
                    out.append(": ")
                    out.append(SecurityHeaders.hsts.value)
                    out.append("\r\n")
                }
            }
        }
        if closeAfter {
            out.append("Connection: close\r\n")
        } else if clientVersionMinor == 0 {
            out.append("Connection: keep-alive\r\n")
        }
        out.append("\r\n")
    }

    /// Whether a field of a backend's response goes on to the client, whatever protocol carries
    /// it: not hop-by-hop or named by `Connection`, not `Transfer-Encoding`, not a
    /// `Strict-Transport-Security` the listener's `hsts` replaces, not an `X-Request-Id` the
    /// proxy sets. `Content-Length` is left to the caller (it depends on the client's framing).
    @inline(__always)
    private func isEndToEndForClient(_ b: [UInt8], _ name: Range<Int>, replacesSTS: Bool, replacesRequestID: Bool) -> Bool {
        if isHopByHop(b, name) || isConnectionNamed(b, name) { return false }
        if replacesSTS && name.count == 25 && b.equalsIgnoringCase(name, "strict-transport-security") { return false }
        if name.count == 17 && b.equalsIgnoringCase(name, "transfer-encoding") { return false }
        if replacesRequestID && name.count == 12 && b.equalsIgnoringCase(name, "x-request-id") { return false }
        return true
    }

    /// The fields of a backend's response for an HTTP/2 client (RFC 9113 §8.2.2: no
    /// connection-specific fields, lowercase names), then the proxy's `x-request-id` and the
    /// listener's `strict-transport-security`. `Content-Length` stays when it describes the body
    /// (or, for HEAD and 304, the body it stands for), never on 1xx and 204.
    mutating func collectHTTP2ResponseFields(_ head: ResponseHead, interim: Bool, requestID: [UInt8], hsts: [UInt8]?,
                                                    policy: ResponsePolicy? = nil, into list: inout HTTP2FieldList) {
        let b = head.bytes
        collectConnectionTokens(b, head.fields, namesOthers: head.connectionNamesOthers)
        let policy = interim ? nil : policy
        var present: UInt8 = policy?.rules?.securityCovered ?? 0
        for field in head.fields {
            let name = field.name
            guard isEndToEndForClient(b, name, replacesSTS: hsts != nil, replacesRequestID: !requestID.isEmpty) else { continue }
            if let policy {
                if let rules = policy.rules, rules.drops(b, name) { continue }
                if policy.cors != nil && ResponsePolicy.isCORSField(b, name) { continue }
                if policy.securityHeaders { present |= SecurityHeaders.present(b, name) }
            }
            if name.count == 14 && b.equalsIgnoringCase(name, "content-length") {
                guard !interim, head.status >= 200, head.status != 204 else { continue }
                switch head.framing {
                case .none, .contentLength: break
                case .chunked, .untilClose: continue
                }
            }
            if interim && isFramingField(b, name) { continue }
            list.append(lowercasedName: b, name, value: b, field.value,
                        neverIndexed: name.count == 10 && b.equalsIgnoringCase(name, "set-cookie"))
        }
        if interim { return }
        if !requestID.isEmpty { list.append(name: "x-request-id", value: requestID, neverIndexed: true) }
        if let hsts { list.append(name: "strict-transport-security", value: hsts) }
        if let policy {
            policy.rules?.append(into: &list, policy.context)
            policy.appendCORS(into: &list)
            if policy.securityHeaders {
                for (i, f) in SecurityHeaders.fields.enumerated() where present & (1 << i) == 0 {
                    list.append(name: f.h2Name, value: f.value.description)
                }
                if policy.secure && hsts == nil && present & (1 << 3) == 0 {
                    list.append(name: SecurityHeaders.hsts.h2Name, value: SecurityHeaders.hsts.value.description)
                }
            }
        }
    }

    /// Appends an interim (1xx) response for the client: status line and end-to-end fields.
    public mutating func writeInterimResponse(_ head: ResponseHead, into out: inout ByteBuffer) {
        let b = head.bytes
        writeStatusLine(head, into: &out)
        collectConnectionTokens(b, head.fields, namesOthers: head.connectionNamesOthers)
        for field in head.fields {
            if isHopByHop(b, field.name) || isFramingField(b, field.name) || isConnectionNamed(b, field.name) { continue }
            appendField(b, field, into: &out)
        }
        out.append("\r\n")
    }

    private func writeStatusLine(_ head: ResponseHead, into out: inout ByteBuffer) {
        // The proxy speaks HTTP/1.1 to every client (RFC 9110 §6.2: a server sends its own version).
        out.append("HTTP/1.1 ")
        out.appendDecimal(head.status)
        out.append(UInt8(ascii: " "))
        if head.reason.isEmpty {
            out.append(utf8: StatusText.reason(head.status))
        } else {
            out.append(head.bytes, head.reason)
        }
        out.append("\r\n")
    }

    // MARK: Helpers

    private func appendFraming(_ framing: OutgoingFraming, into out: inout ByteBuffer) {
        switch framing {
        case .contentLength(let n):
            out.append("Content-Length: ")
            out.appendDecimal(n)
            out.append("\r\n")
        case .chunked:
            out.append("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose:
            break
        }
    }

    @inline(__always)
    private func appendField(_ b: [UInt8], _ field: HeaderField, into out: inout ByteBuffer) {
        out.append(b, field.name)
        out.append(": ")
        out.append(b, field.value)
        out.append("\r\n")
    }

    /// The field names `Connection` lists. Skipped (none collected) when the parser found it
    /// names nothing beyond what `isHopByHop` drops anyway: the common case costs no field scan.
    private mutating func collectConnectionTokens(_ b: [UInt8], _ fields: [HeaderField], namesOthers: Bool) {
        // (`removeAll(keepingCapacity:)` costs ~90 instructions even on an empty array.)
        if !connectionTokens.isEmpty { connectionTokens.removeAll(keepingCapacity: true) }
        guard namesOthers else { return }
        for field in fields where b.equalsIgnoringCase(field.name, "connection") {
            forEachToken(b, field.value) { connectionTokens.append($0) }
        }
    }

    @inline(__always)
    private func isConnectionNamed(_ b: [UInt8], _ name: Range<Int>) -> Bool {
        if connectionTokens.isEmpty { return false }
        for token in connectionTokens where b.equalsIgnoringCase(token, name) { return true }
        return false
    }

    /// Hop-by-hop fields (RFC 9110 §7.6.1) plus the legacy `Proxy-Connection`.
    @inline(__always)
    func isHopByHop(_ b: [UInt8], _ name: Range<Int>) -> Bool {
        switch name.count {
        case 2: return b.equalsIgnoringCase(name, "te")
        case 7: return b.equalsIgnoringCase(name, "upgrade") || b.equalsIgnoringCase(name, "trailer")
        case 10: return b.equalsIgnoringCase(name, "connection") || b.equalsIgnoringCase(name, "keep-alive")
        case 16: return b.equalsIgnoringCase(name, "proxy-connection")
        case 17: return b.equalsIgnoringCase(name, "transfer-encoding")
        default: return false
        }
    }

    @inline(__always)
    private func isFramingField(_ b: [UInt8], _ name: Range<Int>) -> Bool {
        name.count == 14 && b.equalsIgnoringCase(name, "content-length")
    }
}

/// Whether the comma-separated list `value` contains `token` (lower-case literal), ignoring case.
func containsToken(_ b: [UInt8], _ value: Range<Int>, _ token: StaticString) -> Bool {
    var found = false
    forEachToken(b, value) { if !found && b.equalsIgnoringCase($0, token) { found = true } }
    return found
}

/// Calls `body` with each comma-separated token of `value`, OWS trimmed, empty items skipped.
func forEachToken(_ b: [UInt8], _ value: Range<Int>, _ body: (Range<Int>) -> Void) {
    var i = value.lowerBound
    let end = value.upperBound
    while i < end {
        while i < end && (b[i] == UInt8(ascii: " ") || b[i] == UInt8(ascii: "\t") || b[i] == UInt8(ascii: ",")) { i += 1 }
        let start = i
        while i < end && b[i] != UInt8(ascii: ",") { i += 1 }
        var stop = i
        while stop > start && (b[stop - 1] == UInt8(ascii: " ") || b[stop - 1] == UInt8(ascii: "\t")) { stop -= 1 }
        if stop > start { body(start..<stop) }
    }
}
