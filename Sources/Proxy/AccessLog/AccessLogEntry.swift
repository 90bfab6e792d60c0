import Glibc

/// What one access log line says about an exchange besides the request head, the upstream and
/// the backend (which the formatter borrows from the connection rather than copying them into
/// each entry).
struct AccessLogEntry {
    /// The client's IP as text.
    var client: [UInt8]
    /// Whether the head was parsed; a request refused before that is logged without method,
    /// target or fields.
    var requestParsed: Bool
    var status: UInt16
    /// Bytes written to the client for this exchange (head and body).
    var bytesSent: UInt64
    var durationMicros: UInt64
    /// Backend picked → response head received; nil when no head came.
    var upstreamMicros: UInt64?
    var requestID: [UInt8]
}

/// Formats access log lines straight into `ByteBuffer` (no `String`, no allocation per line).
///
/// `combined` is nginx's and Apache's format, then `key=value` fields for the request id, the
/// upstream and backend, and the two durations in seconds:
/// `127.0.0.1 - - [27/Nov/2026:13:29:20 +0000] "GET /a HTTP/1.1" 200 512 "-" "curl/8.5.0" request_id=… upstream="default" backend="b1" backend_addr=127.0.0.1:3001 upstream_time=0.000871 request_time=0.001034 tls_version=- tls_cipher=- sni=-`.
/// Bytes outside printable ASCII, `"` and `\` in request text are written `\xHH`, as nginx does,
/// so a line is always one line. `json` writes one object per line; bytes that are not printable
/// ASCII become `\u00hh` (the byte as Latin-1), so every line is valid JSON whatever a client sent.
enum AccessLogFormatter {
    /// `request` is read only when `e.requestParsed` (never copied into an optional: a copy
    /// costs a retain and release of each of its arrays).
    ///
    /// `upstream` and `backend` are parameters rather than fields of the entry: storing an
    /// optional class reference in a struct cost a generic value-witness copy and a retain per
    /// line (~500 instructions per line in callgrind); a parameter is borrowed.
    static func combined(_ e: AccessLogEntry, _ request: RequestHead, upstream: Upstream?, backend: Backend?,
                         tls: TLSSessionFacts?, time: AccessLogClock, into out: inout ByteBuffer) {
        let parsed = e.requestParsed
        out.append(contentsOf: e.client)
        out.append(" - - [")
        out.append(contentsOf: time.combined)
        out.append("] \"")
        if parsed {
            request.bytes.withBytes(request.method) { out.appendEscapedForCombined($0) }
            out.append(UInt8(ascii: " "))
            request.bytes.withBytes(request.target) { out.appendEscapedForCombined($0) }
            out.append(request.isHTTP2 ? " HTTP/2.0\" " : request.versionMinor == 1 ? " HTTP/1.1\" " : " HTTP/1.0\" ")
        } else {
            out.append("-\" ")
        }
        out.appendDecimal(UInt64(e.status))
        out.append(UInt8(ascii: " "))
        out.appendDecimal(e.bytesSent)
        out.append(" \"")
        headerForCombined("referer", request, parsed: parsed, into: &out)
        out.append("\" \"")
        headerForCombined("user-agent", request, parsed: parsed, into: &out)
        out.append("\" request_id=")
        // Ids are well-formed by construction (`RequestIDGenerator.isWellFormed`: letters, digits,
        // `-_.:+/=`): nothing in them needs escaping in either format.
        if e.requestID.isEmpty { out.append(UInt8(ascii: "-")) } else { out.append(contentsOf: e.requestID) }
        out.append(" upstream=")
        if let u = upstream { out.append(contentsOf: u.logName.combined) } else { out.append(UInt8(ascii: "-")) }
        out.append(" backend=")
        if let b = backend { out.append(contentsOf: b.logID.combined) } else { out.append(UInt8(ascii: "-")) }
        out.append(" backend_addr=")
        if let b = backend { out.append(contentsOf: b.addressBytes) } else { out.append(UInt8(ascii: "-")) }
        out.append(" upstream_time=")
        if let t = e.upstreamMicros { out.appendSeconds(micros: t) } else { out.append(UInt8(ascii: "-")) }
        out.append(" request_time=")
        out.appendSeconds(micros: e.durationMicros)
        if let tls { out.append(contentsOf: tls.combined) } else { out.append(contentsOf: TLSSessionFacts.cleartextCombined) }
        out.append(UInt8(ascii: "\n"))
    }

    static func json(_ e: AccessLogEntry, _ request: RequestHead, upstream: Upstream?, backend: Backend?,
                     tls: TLSSessionFacts?, time: AccessLogClock, into out: inout ByteBuffer) {
        let parsed = e.requestParsed
        out.append("{\"time\":\"")
        out.append(contentsOf: time.iso8601)
        out.append("\",\"client\":\"")
        out.append(contentsOf: e.client)
        out.append("\",\"method\":")
        if parsed { quotedJSON(request.bytes, request.method, into: &out) } else { out.append("null") }
        out.append(",\"target\":")
        if parsed { quotedJSON(request.bytes, request.target, into: &out) } else { out.append("null") }
        out.append(",\"protocol\":")
        if parsed { out.append(request.isHTTP2 ? "\"HTTP/2.0\"" : request.versionMinor == 1 ? "\"HTTP/1.1\"" : "\"HTTP/1.0\"") } else { out.append("null") }
        out.append(",\"status\":")
        out.appendDecimal(UInt64(e.status))
        out.append(",\"bytes_sent\":")
        out.appendDecimal(e.bytesSent)
        out.append(",\"duration\":")
        out.appendSeconds(micros: e.durationMicros)
        out.append(",\"upstream\":")
        if let u = upstream { out.append(contentsOf: u.logName.json) } else { out.append("null") }
        out.append(",\"backend\":")
        if let b = backend { out.append(contentsOf: b.logID.json) } else { out.append("null") }
        out.append(",\"backend_address\":")
        if let b = backend {
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: b.addressBytes)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null")
        }
        out.append(",\"upstream_duration\":")
        if let t = e.upstreamMicros { out.appendSeconds(micros: t) } else { out.append("null") }
        out.append(",\"request_id\":")
        if e.requestID.isEmpty {
            out.append("null")
        } else {
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: e.requestID)
            out.append(UInt8(ascii: "\""))
        }
        out.append(",\"user_agent\":")
        headerForJSON("user-agent", request, parsed: parsed, into: &out)
        out.append(",\"referer\":")
        headerForJSON("referer", request, parsed: parsed, into: &out)
        if let tls { out.append(contentsOf: tls.json) } else { out.append(contentsOf: TLSSessionFacts.cleartextJSON) }
        out.append("}\n")
    }

    // MARK: Pieces

    private static func headerForCombined(_ name: StaticString, _ request: RequestHead, parsed: Bool,
                                          into out: inout ByteBuffer) {
        guard parsed, let i = request.fieldIndex(name) else { return out.append(UInt8(ascii: "-")) }
        request.bytes.withBytes(request.fields[i].value) { out.appendEscapedForCombined($0) }
    }

    private static func headerForJSON(_ name: StaticString, _ request: RequestHead, parsed: Bool,
                                      into out: inout ByteBuffer) {
        guard parsed, let i = request.fieldIndex(name) else { return out.append("null") }
        quotedJSON(request.bytes, request.fields[i].value, into: &out)
    }

    private static func quotedJSON(_ b: [UInt8], _ range: Range<Int>, into out: inout ByteBuffer) {
        out.append(UInt8(ascii: "\""))
        b.withBytes(range) { out.appendEscapedForJSON($0) }
        out.append(UInt8(ascii: "\""))
    }
}

/// A configured name (upstream, backend id) as both formats write it, prepared once when the
/// configuration is applied: `"b1"` quoted and escaped for `combined`, a JSON string for `json`.
struct LogName {
    let combined: [UInt8]
    let json: [UInt8]

    init(_ name: String) {
        let bytes = Array(name.utf8)
        var line = ByteBuffer(capacity: bytes.count * 6 + 2)
        line.append(UInt8(ascii: "\""))
        bytes.withBytes(0..<bytes.count) { line.appendEscapedForCombined($0) }
        line.append(UInt8(ascii: "\""))
        combined = line.array
        // Config names are valid UTF-8: only what JSON requires is escaped.
        json = Array(JSONText.quote(name).utf8)
    }
}

/// The wall-clock time of log lines, formatted once per second per worker.
struct AccessLogClock {
    private var second: Int64 = -1
    private var millisecond: Int64 = -1
    /// `27/Nov/2026:13:29:20 +0000`
    private(set) var combined: [UInt8] = []
    /// `2026-11-27T13:29:20.123Z`
    private(set) var iso8601: [UInt8] = []

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    mutating func update(nowMs: Int64) {
        guard nowMs != millisecond else { return }
        millisecond = nowMs
        let s = nowMs / 1000
        if s != second {
            second = s
            var t = time_t(s)
            var parts = tm()
            gmtime_r(&t, &parts)
            func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
            let year = Int(parts.tm_year) + 1900
            combined = Array("\(two(parts.tm_mday))/\(Self.months[Int(parts.tm_mon)])/\(year):\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000".utf8)
            iso8601 = Array("\(year)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).000Z".utf8)
        }
        let ms = Int(nowMs % 1000)
        let n = iso8601.count
        iso8601[n - 4] = UInt8(ascii: "0") + UInt8(ms / 100)
        iso8601[n - 3] = UInt8(ascii: "0") + UInt8(ms / 10 % 10)
        iso8601[n - 2] = UInt8(ascii: "0") + UInt8(ms % 10)
    }
}
