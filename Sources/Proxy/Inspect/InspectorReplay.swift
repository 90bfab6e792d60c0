/// Sends a recorded request again (`POST …/api/replay/SEQ`): as an HTTP/1.1 client of one of
/// the proxy's own listeners (a cleartext one if there is one, else over TLS, unverified), so it takes the same path as the original — routing,
/// policies, the balancer, the recorder (which lists it with `replay_of`, from the
/// `X-Inspect-Replay` field the replay carries; the backend sees that field too).
///
/// The original's head is sent as it was recorded (secrets included: they are kept for this),
/// with its whole body; a request whose body was not recorded in full, or a tunnel, is not
/// replayed. The answer is read and dropped: the recorder shows it.
/// Threading: the worker's loop.
enum InspectorReplay {
    /// Fields that belong to the original connection, not to the request.
    private static let hopFields: Set<String> = ["connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade",
                                                 "proxy-connection", "x-inspect-replay", "http2-settings"]

    /// Why `x` cannot be replayed, or nil.
    static func refusal(_ x: InspectedExchange) -> String? {
        if x.tunnel { return "a tunnel (WebSocket or another upgrade) is not replayed" }
        if !x.requestBodyComplete {
            return "its body did not arrive in full (the request was answered, or the client stopped, before the end of it)"
        }
        if x.requestBody.truncated {
            return "its body (\(x.requestBody.size) bytes) was not recorded in full: raise inspect.max_body_bytes to replay it"
        }
        return nil
    }

    /// The request as HTTP/1.1 bytes, ending the connection after it.
    static func request(_ x: InspectedExchange, field: String) -> [UInt8] {
        var head = "\(x.method) \(x.target) HTTP/1.1\r\n"
        var hasHost = false
        for f in x.requestFields {
            let name = f.name.lowercased()
            if hopFields.contains(name) { continue }
            if name == "host" { hasHost = true }
            head += "\(f.name): \(f.value)\r\n"
        }
        if !hasHost { head += "Host: \(x.host.isEmpty ? "localhost" : x.host)\r\n" }
        head += "X-Inspect-Replay: \(field)\r\n"
        if x.requestBody.size > 0 || x.method == "POST" || x.method == "PUT" || x.method == "PATCH" {
            head += "Content-Length: \(x.requestBody.bytes.count)\r\n"
        }
        head += "Connection: close\r\n\r\n"
        return Array(head.utf8) + x.requestBody.bytes
    }
}
