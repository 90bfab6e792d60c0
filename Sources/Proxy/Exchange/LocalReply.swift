/// An answer the proxy gives itself — an admin endpoint, a refusal, a 502/503/504 — as a status,
/// fields and a body rather than wire bytes: the HTTP/1 connection writes it with
/// `HTTP1LocalReplyWriter`; an HTTP/2 stream will encode the same value as HEADERS and DATA.
///
/// Every reply also carries `Server`, `Content-Type`, `Content-Length`, `Cache-Control: no-store`
/// and the exchange's `X-Request-Id`; the codec adds those and its own connection management.
struct LocalReply {
    var status: UInt16
    var contentType: StaticString
    var body: [UInt8]
    /// Further fields (`Allow`, `Retry-After`), in order.
    var fields: [(name: StaticString, value: String)]

    init(status: UInt16, contentType: StaticString, body: [UInt8], fields: [(name: StaticString, value: String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.fields = fields
    }

    /// A plain-text reply whose body is `text` and a line end.
    static func text(_ status: UInt16, _ text: String, fields: [(name: StaticString, value: String)] = []) -> LocalReply {
        LocalReply(status: status, contentType: "text/plain; charset=utf-8", body: Array((text + "\n").utf8), fields: fields)
    }
}
