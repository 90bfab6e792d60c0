/// Writes a `LocalReply` as an HTTP/1.1 response.
enum HTTP1LocalReplyWriter {
    /// Appends the whole response; `headOnly` (a HEAD request) omits the body but keeps its length.
    /// `addedField` is a whole field line the listener adds to every response (HSTS).
    static func write(_ reply: LocalReply, keepAlive: Bool, headOnly: Bool, requestID: [UInt8], addedField: [UInt8]? = nil,
                      into out: inout ByteBuffer) {
        out.append("HTTP/1.1 ")
        out.appendDecimal(reply.status)
        out.append(UInt8(ascii: " "))
        out.append(utf8: StatusText.reason(reply.status))
        out.append("\r\nServer: swift-proxy\r\nContent-Type: ")
        out.append(reply.contentType)
        out.append("\r\nContent-Length: ")
        out.appendDecimal(reply.body.count)
        out.append("\r\nCache-Control: no-store\r\n")
        for field in reply.fields { out.appendField(field.name, Array(field.value.utf8)) }
        if !requestID.isEmpty { out.appendField("X-Request-Id", requestID) }
        if let addedField { out.append(contentsOf: addedField) }
        out.append(keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n")
        if !headOnly { out.append(contentsOf: reply.body) }
    }
}
