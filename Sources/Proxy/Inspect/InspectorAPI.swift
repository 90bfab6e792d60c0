/// The request inspector's JSON (`GET …/api/requests`, `GET …/api/requests/SEQ`) and its
/// copy-as-curl command, rendered from the store's entries. The format is in
/// docs/dev-gateway.md; the page (`InspectorPageHTML`) is its one client.
///
/// Secret fields (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`) are masked
/// here, in heads and in the curl command, unless `reveal_secrets`.
/// Threading: any (reads immutable records).
enum InspectorAPI {
    static func list(_ store: InspectorStore, config: InspectConfig, after: UInt64?) -> [UInt8] {
        var out = "{\"enabled\": true, \"max_requests\": \(config.maxRequests), \"reveal_secrets\": \(config.revealSecrets), "
            + "\"latest\": \(store.latest), \"items\": ["
        var first = true
        for entry in store.list(limit: config.maxRequests, after: after) {
            if !first { out += ", " }
            first = false
            out += "{" + summary(entry) + "}"
        }
        out += "]}"
        return Array(out.utf8)
    }

    static func detail(_ entry: InspectorStore.Entry, config: InspectConfig) -> [UInt8] {
        var out = "{" + summary(entry)
        if case .done(let x) = entry {
            out += ", \"request\": {\"head\": \(head(x.requestFields, config)), \"body\": \(body(x.requestBody, x.requestFields))}"
            if let fields = x.responseFields {
                out += ", \"response\": {\"head\": \(head(fields, config)), \"body\": \(body(x.responseBody, fields))}"
            } else {
                out += ", \"response\": null"
            }
            out += ", \"compressed\": " + (x.compressedAs.map(JSONText.quote) ?? "null")
            out += ", \"timings\": {\"queue_ms\": \(number(x.queueMs)), \"connect_ms\": \(number(x.connectMs)), "
                + "\"first_byte_ms\": \(number(x.firstByteMs)), \"total_ms\": \(number(x.totalMs))}"
            out += ", \"attempts\": [" + x.attempts.map { "{\"backend\": \(JSONText.quote($0.backend)), \"outcome\": \(JSONText.quote($0.outcome))}" }
                .joined(separator: ", ") + "]"
            out += ", \"curl\": " + JSONText.quote(curl(x, reveal: config.revealSecrets))
        }
        out += "}"
        return Array(out.utf8)
    }

    private static func summary(_ entry: InspectorStore.Entry) -> String {
        switch entry {
        case .inFlight(let e):
            return "\"seq\": \(e.seq), \"started_ms\": \(e.startedMs), \"state\": \"in_flight\", \"method\": \(JSONText.quote(e.method)), "
                + "\"target\": \(JSONText.quote(e.target)), \"host\": \(JSONText.quote(e.host)), \"protocol\": \(JSONText.quote(e.protocolName)), "
                + "\"status\": 0, \"duration_ms\": null, \"route\": \(JSONText.quote(e.route)), \"upstream\": \"\", \"backend\": \"\", "
                + "\"request_bytes\": 0, \"response_bytes\": 0, \"tunnel\": false, \"replay_of\": \(e.replayOf.map(String.init) ?? "null"), \"error\": null"
        case .done(let x):
            return "\"seq\": \(x.seq), \"started_ms\": \(x.startedMs), \"state\": \"done\", \"method\": \(JSONText.quote(x.method)), "
                + "\"target\": \(JSONText.quote(x.target)), \"host\": \(JSONText.quote(x.host)), \"protocol\": \(JSONText.quote(x.protocolName)), "
                + "\"status\": \(x.status), \"duration_ms\": \(number(x.totalMs)), \"route\": \(JSONText.quote(x.route)), "
                + "\"upstream\": \(JSONText.quote(x.upstream)), \"backend\": \(JSONText.quote(x.backend)), "
                + "\"request_bytes\": \(x.requestBody.size), \"response_bytes\": \(x.responseBody.size), \"tunnel\": \(x.tunnel), "
                + "\"replay_of\": \(x.replayOf.map(String.init) ?? "null"), \"error\": \(x.error.map(JSONText.quote) ?? "null")"
        }
    }

    private static func number(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "null" }
        return String((value * 1000).rounded() / 1000)
    }

    static func isSecret(_ name: String) -> Bool {
        switch name.lowercased() {
        case "authorization", "proxy-authorization", "cookie", "set-cookie": true
        default: false
        }
    }

    static func shown(_ name: String, _ value: String, reveal: Bool) -> String {
        reveal || !isSecret(name) ? value : "•••••• (\(value.utf8.count) bytes hidden)"
    }

    private static func head(_ fields: [(name: String, value: String)], _ config: InspectConfig) -> String {
        "[" + fields.map { "[\(JSONText.quote($0.name)), \(JSONText.quote(shown($0.name, $0.value, reveal: config.revealSecrets)))]" }
            .joined(separator: ", ") + "]"
    }

    private static func value(_ fields: [(name: String, value: String)], _ name: String) -> String? {
        fields.first { $0.name.lowercased() == name }?.value
    }

    private static func body(_ b: InspectedExchange.Body, _ fields: [(name: String, value: String)]) -> String {
        let type = value(fields, "content-type")
        let coding = value(fields, "content-encoding").flatMap { $0.lowercased() == "identity" ? nil : $0 }
        let text: String? = coding == nil ? String(validating: b.bytes, as: UTF8.self) : nil
        let data = text.map(JSONText.quote) ?? "\"" + base64(b.bytes) + "\""
        return "{\"size\": \(b.size), \"captured\": \(b.bytes.count), \"truncated\": \(b.truncated), "
            + "\"encoding\": \(text != nil ? "\"text\"" : "\"base64\""), \"data\": \(data), "
            + "\"content_type\": \(type.map(JSONText.quote) ?? "null"), \"content_encoding\": \(coding.map(JSONText.quote) ?? "null")}"
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [table[Int(n >> 18)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], table[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest > 1 ? UInt32(bytes[i + 1]) << 8 : 0)
            out += [table[Int(n >> 18)], table[Int(n >> 12 & 63)], rest > 1 ? table[Int(n >> 6 & 63)] : UInt8(ascii: "="), UInt8(ascii: "=")]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A shell command that sends the recorded request again (single-quoted for POSIX shells).
    /// A body not recorded in full is left out, and said so.
    static func curl(_ x: InspectedExchange, reveal: Bool) -> String {
        func quoted(_ s: String) -> String { "'" + s.replacing("'", with: "'\\''") + "'" }
        var parts = ["curl"]
        if x.method == "HEAD" {
            parts.append("-I")  // -X HEAD would wait for a body
        } else if x.method != "GET" || x.requestBody.size > 0 {
            parts += ["-X", quoted(x.method)]
        }
        let authority = x.host.isEmpty ? "localhost" : x.host
        if x.target.hasPrefix("/") {
            parts.append(quoted("\(x.scheme)://\(authority)\(x.target)"))
        } else if x.target == "*" {
            parts += [quoted("\(x.scheme)://\(authority)"), "--request-target", "'*'"]
        } else {
            // Absolute form: sent to the proxy as it was (the address the client reached: its
            // Host may name the origin), not to the host the target names.
            let proxy = x.localAuthority.isEmpty ? authority : x.localAuthority
            parts += [quoted("\(x.scheme)://\(proxy)/"), "--request-target", quoted(x.target)]
        }
        for f in x.requestFields {
            switch f.name.lowercased() {
            case "host", "content-length", "connection", "transfer-encoding", "keep-alive", "te", "upgrade", "x-inspect-replay": continue
            default: parts += ["-H", quoted("\(f.name): \(shown(f.name, f.value, reveal: reveal))")]
            }
        }
        if x.requestBody.size > 0 {
            if x.requestBody.truncated {
                parts.append("# body of \(x.requestBody.size) bytes not recorded in full")
            } else if x.requestBody.bytes.contains(where: { ($0 < 0x20 && $0 != 9 && $0 != 10 && $0 != 13) || $0 == 0x7f }) {
                // Pasted into a terminal they would act (escape sequences) or be lost (NUL).
                parts.append("# body of \(x.requestBody.size) bytes with control characters not shown")
            } else if let text = String(validating: x.requestBody.bytes, as: UTF8.self),
                      !text.unicodeScalars.contains(where: { (0x80...0x9F).contains($0.value) }) {  // C1 controls act too
                parts += ["--data-binary", quoted(text)]
            } else {
                parts.append("# binary body of \(x.requestBody.size) bytes not shown")
            }
        }
        return parts.joined(separator: " ")
    }
}
