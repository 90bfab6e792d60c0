import Proxy

/// A small, fast HTTP/1.1 origin for demos, tests and benchmarks, on the proxy's own loop layer.
///
/// Routes (query parameters in brackets):
/// - `GET /health` → 200 `OK`
/// - `/stream?bytes=N[&chunked=1]` → N bytes of the pattern `byte[i] = i % 251`, streamed with
///   backpressure (`Content-Length`, or chunked)
/// - `/sse?events=N&interval_ms=M` → `text/event-stream`, one event every M ms
/// - `/delay?ms=N` → the echo, after N ms
/// - `/status?code=NNN` → the echo with that status
/// - `/silent` → reads the request and never answers
/// - `/close` → closes the connection without answering
/// - anything else → 200 JSON echo of the request (bodies of any size are read and discarded,
///   counted in `body_bytes` and hashed in `body_fnv1a`)
public final class TestBackendServer {
    public let loop: EventLoop
    private let listener: TCPListener
    public private(set) var port: UInt16 = 0

    public init(loop: EventLoop) {
        self.loop = loop
        listener = TCPListener(loop: loop)
    }

    /// Binds and listens; returns the bound address.
    public func start(host: String, port: UInt16) throws -> SocketAddress {
        guard let address = SocketAddress(ip: host, port: port) else { throw AddressError(message: "bad address \(host)") }
        listener.onAccept = { [unowned self] stream in
            BackendConnection(server: self, stream: stream).start()
        }
        try listener.listen(on: address)
        let bound = listener.localAddress ?? address
        self.port = bound.port
        return bound
    }

    public func stop() { listener.close() }
}

/// The repeating byte pattern of `/stream`: `byte[i] = i % 251` (a prime, so block boundaries
/// never line up with it and a shifted or dropped block is detected).
public enum StreamPattern {
    public static let period = 251
    public static func byte(at offset: UInt64) -> UInt8 { UInt8(offset % UInt64(period)) }
}

/// FNV-1a, 64-bit: a cheap, dependency-free body fingerprint for transfer-integrity tests.
public struct FNV1a {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        value = h
    }
    public var hex: String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

final class BackendConnection {
    private unowned let server: TestBackendServer
    private let stream: TCPStream
    private var accumulator = HeadAccumulator(limits: HeadLimits(maxHeadBytes: 1 << 20, maxTargetBytes: 1 << 19, maxHeaderCount: 1000), isRequest: true)
    private var request = RequestHead()
    private var bodyRemaining: UInt64 = 0
    private var decoder = ChunkedDecoder()
    private var inBody = false
    private var bodyBytes: UInt64 = 0
    private var hash = FNV1a()
    /// A response is being produced asynchronously; further input waits in `pending`.
    private var busy = false
    private var pending: [UInt8] = []
    private var timer: Timer?
    private var streamRemaining: UInt64 = 0
    private var streamOffset: UInt64 = 0
    private var streamChunked = false
    private var sseLeft = 0
    private var closeAfter = false

    private static let patternBlock: [UInt8] = (0..<(64 * 1024 + StreamPattern.period)).map { UInt8($0 % StreamPattern.period) }

    init(server: TestBackendServer, stream: TCPStream) {
        self.server = server
        self.stream = stream
    }

    func start() {
        stream.setNoDelay()
        stream.onRead = { [self] bytes in
            if busy { pending.append(raw: bytes); return }
            handle(bytes)
        }
        stream.onReadEnd = { [self] _ in close() }
        stream.onWriteError = { [self] _ in close() }
        stream.onDrain = { [self] in if streamRemaining > 0 { pumpStream() } }
        stream.startReading()
    }

    private func close() {
        timer?.close()
        timer = nil
        stream.close()
    }

    private func handle(_ bytes: UnsafeRawBufferPointer) {
        var input = bytes
        while !input.isEmpty && !busy && !stream.isClosing {
            if !inBody {
                let n: Int
                do { n = try accumulator.append(input) } catch { return reject(error) }
                input = UnsafeRawBufferPointer(rebasing: input[n...])
                guard accumulator.isComplete else { return }
                do { request = try HeadParser.parseRequest(accumulator.bytes, limits: accumulator.limits) } catch { return reject(error) }
                inBody = true
                bodyBytes = 0
                hash = FNV1a()
                decoder.reset()
                switch request.framing {
                case .contentLength(let n): bodyRemaining = n
                case .chunked: bodyRemaining = 0
                case .none, .untilClose: bodyRemaining = 0
                }
                if request.expectsContinue { stream.write(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)) }
            }
            switch request.framing {
            case .contentLength:
                let take = Int(min(UInt64(input.count), bodyRemaining))
                let part = UnsafeRawBufferPointer(rebasing: input[..<take])
                hash.update(part)
                bodyBytes += UInt64(take)
                bodyRemaining -= UInt64(take)
                input = UnsafeRawBufferPointer(rebasing: input[take...])
                if bodyRemaining > 0 { return }
            case .chunked:
                let n: Int
                do {
                    n = try decoder.decode(input) { data throws(HTTPParseError) in
                        hash.update(data)
                        bodyBytes += UInt64(data.count)
                    }
                } catch { return reject(error) }
                input = UnsafeRawBufferPointer(rebasing: input[n...])
                if !decoder.isComplete { return }
            case .none, .untilClose:
                break
            }
            inBody = false
            accumulator.reset()
            respond()
        }
        if busy && !input.isEmpty { pending.append(raw: input) }
    }

    private func reject(_ error: HTTPParseError) {
        send(status: error.status, contentType: "text/plain", body: Array("\(error.reason)\n".utf8), close: true)
        stream.shutdown { [self] _ in close() }
    }

    // MARK: Routes

    private func respond() {
        let target = request.targetString
        let (path, query) = split(target)
        closeAfter = !request.keepAlive
        switch path {
        case "/health":
            send(status: 200, contentType: "text/plain", body: Array("OK\n".utf8))
        case "/stream":
            streamRemaining = UInt64(query["bytes"] ?? "0") ?? 0
            streamOffset = 0
            streamChunked = query["chunked"] == "1"
            var head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            head += streamChunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: \(streamRemaining)\r\n"
            head += closeAfter ? "Connection: close\r\n\r\n" : "\r\n"
            stream.write(Array(head.utf8))
            if request.isHEAD { streamRemaining = 0; return finishResponse() }
            busy = true
            pumpStream()
        case "/sse":
            sseLeft = Int(query["events"] ?? "3") ?? 3
            let interval = UInt64(query["interval_ms"] ?? "1000") ?? 1000
            stream.write(Array("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
            busy = true
            let t = Timer(loop: server.loop)
            timer = t
            var n = 0
            t.onFire = { [self] in
                n += 1
                let event = Array("id: \(n)\ndata: event \(n)\n\n".utf8)
                var chunk = ByteBuffer(capacity: event.count + 16)
                chunk.appendHex(event.count)
                chunk.append("\r\n")
                chunk.append(contentsOf: event)
                chunk.append("\r\n")
                sseLeft -= 1
                if sseLeft <= 0 {
                    chunk.append("0\r\n\r\n")
                    chunk.withUnsafeBytes { stream.write($0) }
                    timer?.close()
                    timer = nil
                    finishResponse()
                } else {
                    chunk.withUnsafeBytes { stream.write($0) }
                }
            }
            t.start(timeoutMs: 0, repeatMs: interval)
        case "/delay":
            let ms = UInt64(query["ms"] ?? "100") ?? 100
            busy = true
            let t = Timer(loop: server.loop)
            timer = t
            t.onFire = { [self] in
                timer?.close()
                timer = nil
                sendEcho(status: 200)
                finishResponse()
            }
            t.start(timeoutMs: ms)
        case "/headers":
            // `n` response fields `X-Field-<i>` of `size` bytes each, and a short body.
            let n = min(Int(query["n"] ?? "20") ?? 20, 1000), size = min(Int(query["size"] ?? "10") ?? 10, 8192)
            var head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            for i in 0..<n { head += "X-Field-\(i): " + String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: size) + "\r\n" }
            head += closeAfter ? "Connection: close\r\n\r\nOK\n" : "\r\nOK\n"
            stream.write(Array(head.utf8))
            finishResponse()
        case "/status":
            sendEcho(status: UInt16(query["code"] ?? "200") ?? 200)
        case "/silent":
            busy = true  // never answers; input from now on is ignored
        case "/close":
            close()
        default:
            sendEcho(status: 200)
        }
    }

    private func finishResponse() {
        busy = false
        if closeAfter {
            stream.shutdown { [self] _ in close() }
            return
        }
        if !pending.isEmpty {
            let buffered = pending
            pending = []
            buffered.withUnsafeBytes { handle($0) }
        }
    }

    /// Writes the next blocks of `/stream` while the socket takes them.
    private func pumpStream() {
        Self.patternBlock.withUnsafeBytes { block in
            while streamRemaining > 0 && !stream.isCongested && !stream.isClosing {
                let start = Int(streamOffset % UInt64(StreamPattern.period))
                let n = Int(min(streamRemaining, 64 * 1024))
                let data = UnsafeRawBufferPointer(rebasing: block[start..<(start + n)])
                if streamChunked {
                    var hdr = ByteBuffer(capacity: 32)
                    hdr.appendHex(n)
                    hdr.append("\r\n")
                    let crlf: StaticString = "\r\n"
                    hdr.withUnsafeBytes { h in
                        stream.write(h, data, UnsafeRawBufferPointer(start: crlf.utf8Start, count: 2))
                    }
                } else {
                    stream.write(data)
                }
                streamRemaining -= UInt64(n)
                streamOffset += UInt64(n)
            }
        }
        if streamRemaining == 0 && busy {
            if streamChunked { stream.write(Array("0\r\n\r\n".utf8)) }
            finishResponse()
        }
    }

    private func sendEcho(status: UInt16) {
        var json = "{\"backend\":\"backend-\(server.port)\",\"port\":\(server.port),"
        json += "\"method\":\(quote(request.methodString)),\"path\":\(quote(request.targetString)),"
        json += "\"content_length\":\(quote(request.value(of: "content-length") ?? "0")),"
        json += "\"body_bytes\":\(bodyBytes),\"body_fnv1a\":\"\(hash.hex)\",\"headers\":{"
        var seen: [String: String] = [:]
        var order: [String] = []
        for f in request.fields {
            let name = request.bytes.string(f.name).lowercased()
            let value = request.bytes.string(f.value)
            if let v = seen[name] { seen[name] = v + ", " + value } else { seen[name] = value; order.append(name) }
        }
        json += order.map { "\(quote($0)):\(quote(seen[$0]!))" }.joined(separator: ",")
        json += "}}\n"
        send(status: status, contentType: "application/json", body: Array(json.utf8), close: closeAfter)
    }

    private func send(status: UInt16, contentType: String, body: [UInt8], close: Bool = false) {
        var head = "HTTP/1.1 \(status) \(StatusText.reason(status))\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        if close { head += "Connection: close\r\n" }
        head += "\r\n"
        let h = Array(head.utf8)
        h.withUnsafeBytes { hb in
            if request.isHEAD || status == 204 || status == 304 {
                stream.write(hb)
            } else {
                body.withUnsafeBytes { bb in stream.write(hb, bb) }
            }
        }
        if close && !busy { stream.shutdown { [self] _ in self.close() } }
    }

    private func split(_ target: String) -> (String, [String: String]) {
        guard let q = target.firstIndex(of: "?") else { return (target, [:]) }
        var query: [String: String] = [:]
        for pair in target[target.index(after: q)...].split(separator: "&") {
            // `=` alone (or `=x`) has an empty name: split would give no first element.
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            query[String(kv[0])] = kv.count > 1 ? String(kv[1]) : ""
        }
        return (String(target[..<q]), query)
    }

    private func quote(_ s: String) -> String { JSONText.quote(s) }
}
