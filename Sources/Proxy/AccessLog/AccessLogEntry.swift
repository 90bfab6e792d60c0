import Glibc

/// What one access log line says about an exchange; borrowed from the client connection for the
/// moment the line is written.
struct AccessLogEntry {
    /// The client's IP as text.
    var client: [UInt8]
    /// The parsed request; nil when the head was refused before it could be parsed.
    var request: RequestHead?
    var status: UInt16
    /// Bytes written to the client for this exchange (head and body).
    var bytesSent: UInt64
    var durationMicros: UInt64
    var upstream: String?
    var backend: Backend?
    /// Backend picked → response head received; nil when no head came.
    var upstreamMicros: UInt64?
    var requestID: [UInt8]
}

/// Formats access log lines straight into a byte buffer (no `String` per line).
///
/// `combined` is nginx's and Apache's format, then `key=value` fields for the request id, the
/// upstream and backend, and the two durations in seconds:
/// `127.0.0.1 - - [27/Nov/2026:13:29:20 +0000] "GET /a HTTP/1.1" 200 512 "-" "curl/8.5.0" request_id=… upstream="default" backend="b1" backend_addr=127.0.0.1:3001 upstream_time=0.000871 request_time=0.001034`.
/// Bytes outside printable ASCII, `"` and `\` in request text are written `\xHH`, as nginx does,
/// so a line is always one line. `json` writes one object per line; bytes that are not printable
/// ASCII become `\u00HH` (the byte as Latin-1), so every line is valid JSON whatever a client sent.
enum AccessLogFormatter {
    static func combined(_ e: AccessLogEntry, time: AccessLogClock, into out: inout [UInt8]) {
        out.append(contentsOf: e.client)
        out.append(" - - [")
        out.append(contentsOf: time.combined)
        out.append("] \"")
        if let r = e.request {
            escapeCombined(r.bytes, r.method, into: &out)
            out.append(UInt8(ascii: " "))
            escapeCombined(r.bytes, r.target, into: &out)
            out.append(r.versionMinor == 1 ? " HTTP/1.1\" " : " HTTP/1.0\" ")
        } else {
            out.append("-\" ")
        }
        out.appendDecimal(e.status)
        out.append(UInt8(ascii: " "))
        out.appendDecimal(e.bytesSent)
        out.append(" \"")
        header("referer", e.request, into: &out, escape: escapeCombined)
        out.append("\" \"")
        header("user-agent", e.request, into: &out, escape: escapeCombined)
        out.append("\" request_id=")
        if e.requestID.isEmpty { out.append(UInt8(ascii: "-")) } else { escapeCombined(e.requestID, 0..<e.requestID.count, into: &out) }
        out.append(" upstream=")
        quotedCombined(e.upstream, into: &out)
        out.append(" backend=")
        quotedCombined(e.backend?.id, into: &out)
        out.append(" backend_addr=")
        if let b = e.backend { out.append(contentsOf: b.addressBytes) } else { out.append(UInt8(ascii: "-")) }
        out.append(" upstream_time=")
        if let t = e.upstreamMicros { appendSeconds(t, into: &out) } else { out.append(UInt8(ascii: "-")) }
        out.append(" request_time=")
        appendSeconds(e.durationMicros, into: &out)
        out.append(UInt8(ascii: "\n"))
    }

    static func json(_ e: AccessLogEntry, time: AccessLogClock, into out: inout [UInt8]) {
        out.append("{\"time\":\"")
        out.append(contentsOf: time.iso8601)
        out.append("\",\"client\":\"")
        out.append(contentsOf: e.client)
        out.append("\",\"method\":")
        if let r = e.request { quotedJSON(r.bytes, r.method, into: &out) } else { out.append("null") }
        out.append(",\"target\":")
        if let r = e.request { quotedJSON(r.bytes, r.target, into: &out) } else { out.append("null") }
        out.append(",\"protocol\":")
        if let r = e.request { out.append(r.versionMinor == 1 ? "\"HTTP/1.1\"" : "\"HTTP/1.0\"") } else { out.append("null") }
        out.append(",\"status\":")
        out.appendDecimal(e.status)
        out.append(",\"bytes_sent\":")
        out.appendDecimal(e.bytesSent)
        out.append(",\"duration\":")
        appendSeconds(e.durationMicros, into: &out)
        out.append(",\"upstream\":")
        quotedJSON(e.upstream, into: &out)
        out.append(",\"backend\":")
        quotedJSON(e.backend?.id, into: &out)
        out.append(",\"backend_address\":")
        if let b = e.backend {
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: b.addressBytes)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null")
        }
        out.append(",\"upstream_duration\":")
        if let t = e.upstreamMicros { appendSeconds(t, into: &out) } else { out.append("null") }
        out.append(",\"request_id\":")
        if e.requestID.isEmpty { out.append("null") } else { quotedJSON(e.requestID, 0..<e.requestID.count, into: &out) }
        out.append(",\"user_agent\":")
        headerJSON("user-agent", e.request, into: &out)
        out.append(",\"referer\":")
        headerJSON("referer", e.request, into: &out)
        out.append("}\n")
    }

    // MARK: Pieces

    private static func header(_ name: StaticString, _ request: RequestHead?, into out: inout [UInt8],
                               escape: ([UInt8], Range<Int>, inout [UInt8]) -> Void) {
        guard let r = request, let i = r.fieldIndex(name) else { return out.append(UInt8(ascii: "-")) }
        escape(r.bytes, r.fields[i].value, &out)
    }

    private static func headerJSON(_ name: StaticString, _ request: RequestHead?, into out: inout [UInt8]) {
        guard let r = request, let i = r.fieldIndex(name) else { return out.append("null") }
        quotedJSON(r.bytes, r.fields[i].value, into: &out)
    }

    private static let hex = Array("0123456789abcdef".utf8)
    /// nginx writes escapes in upper case (`\x22`).
    private static let upperHex = Array("0123456789ABCDEF".utf8)

    static func escapeCombined(_ b: [UInt8], _ range: Range<Int>, into out: inout [UInt8]) {
        for i in range {
            let c = b[i]
            if c < 0x20 || c >= 0x7F || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "x"))
                out.append(upperHex[Int(c >> 4)])
                out.append(upperHex[Int(c & 0xF)])
            } else {
                out.append(c)
            }
        }
    }

    private static func quotedCombined(_ s: String?, into out: inout [UInt8]) {
        guard let s else { return out.append(UInt8(ascii: "-")) }
        let bytes = Array(s.utf8)
        out.append(UInt8(ascii: "\""))
        escapeCombined(bytes, 0..<bytes.count, into: &out)
        out.append(UInt8(ascii: "\""))
    }

    static func quotedJSON(_ b: [UInt8], _ range: Range<Int>, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for i in range {
            let c = b[i]
            switch c {
            case UInt8(ascii: "\""): out.append("\\\"")
            case UInt8(ascii: "\\"): out.append("\\\\")
            case 0x20..<0x7F: out.append(c)
            default:
                out.append("\\u00")
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 0xF)])
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func quotedJSON(_ s: String?, into out: inout [UInt8]) {
        guard let s else { return out.append("null") }
        // Config text (upstream names, ids) is already valid UTF-8: escape only what JSON needs.
        out.append(contentsOf: JSONText.quote(s).utf8)
    }

    /// Microseconds as seconds with six decimals (`0.001034`).
    static func appendSeconds(_ micros: UInt64, into out: inout [UInt8]) {
        out.appendDecimal(micros / 1_000_000)
        out.append(UInt8(ascii: "."))
        let fraction = micros % 1_000_000
        var place: UInt64 = 100_000
        while place > 0 {
            out.append(UInt8(ascii: "0") + UInt8(fraction / place % 10))
            place /= 10
        }
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
