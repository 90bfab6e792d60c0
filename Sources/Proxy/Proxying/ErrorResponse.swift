/// Responses the proxy writes itself: errors with a short plain-text reason, and small bodies
/// such as `/_health`.
public enum ErrorResponse {
    /// Appends a complete response with a plain-text body `reason + "\n"`.
    public static func write(status: UInt16, reason: String, keepAlive: Bool, headOnly: Bool = false,
                             extraHeaders: String = "", into out: inout ByteBuffer) {
        write(status: status, contentType: "text/plain; charset=utf-8", body: Array((reason + "\n").utf8),
              keepAlive: keepAlive, headOnly: headOnly, extraHeaders: extraHeaders, into: &out)
    }

    /// Appends a complete response with the given body (omitted for HEAD, length kept).
    public static func write(status: UInt16, contentType: StaticString, body: [UInt8], keepAlive: Bool,
                             headOnly: Bool, extraHeaders: String = "", into out: inout ByteBuffer) {
        out.append("HTTP/1.1 ")
        out.appendDecimal(status)
        out.append(UInt8(ascii: " "))
        out.append(utf8: StatusText.reason(status))
        out.append("\r\nServer: swift-proxy\r\nContent-Type: ")
        out.append(contentType)
        out.append("\r\nContent-Length: ")
        out.appendDecimal(body.count)
        out.append("\r\nCache-Control: no-store\r\n")
        out.append(utf8: extraHeaders)
        out.append(keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n")
        if !headOnly { out.append(contentsOf: body) }
    }
}
