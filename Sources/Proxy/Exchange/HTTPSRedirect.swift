/// `redirect_to_https`: the `308 Permanent Redirect` a cleartext listener answers with, to the
/// same host and target over HTTPS. 308 (not 301) keeps the method and body of a POST.
enum HTTPSRedirect {
    /// `https://HOST[:PORT]TARGET` from the request's Host (its port replaced by `port`, left out
    /// when 443) and `target` (the origin-form part of the request's target); a `400` when there
    /// is no usable Host to send the client to.
    static func reply(for request: RequestHead, target targetRange: Range<Int>, port: UInt16) -> LocalReply {
        guard let i = request.hostField else {
            return .text(400, "Bad Request: this listener redirects to HTTPS, which needs the request's Host")
        }
        let b = request.bytes
        var host = b[request.fields[i].value]
        // Drop the port: `[v6]:port` keeps the brackets, `name:port` loses everything from ':'.
        if let close = host.lastIndex(of: UInt8(ascii: "]")) {
            host = host[...close]
        } else if let colon = host.firstIndex(of: UInt8(ascii: ":")) {
            host = host[..<colon]
        }
        guard !host.isEmpty, host.allSatisfy(isHostByte) else {
            return .text(400, "Bad Request: the Host field is not a host name this listener can redirect to")
        }
        var location = "https://" + String(decoding: host, as: UTF8.self)
        if port != 443 { location += ":\(port)" }
        let target = b[targetRange]
        // Keeps the path and query; `*` (and an absolute-form target without a path) goes to `/`.
        if target.first == UInt8(ascii: "/") {
            location += String(decoding: target, as: UTF8.self)
        } else if target.first == UInt8(ascii: "?") {
            location += "/" + String(decoding: target, as: UTF8.self)
        } else {
            location += "/"
        }
        return .text(308, "Permanent Redirect: this address serves HTTPS only; go to \(location)",
                     fields: [(name: "Location" as StaticString, value: location)])
    }

    /// Letters, digits and what names and IP literals use; nothing that could end the field.
    private static func isHostByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_")
            || c == UInt8(ascii: "[") || c == UInt8(ascii: "]") || c == UInt8(ascii: ":")
    }
}
