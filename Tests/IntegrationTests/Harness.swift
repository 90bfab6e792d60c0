import Foundation
import Glibc
@_exported import TestSupport

/// Test harness: start the real `proxy` and `test-backend` binaries on 127.0.0.1 port 0, talk to
/// them over raw sockets, and stop them. Every wait is bounded.

/// The folder holding the built products (the test runner lives beside them).
let productsDirectory: URL = {
    let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    var dir = exe.deletingLastPathComponent()
    // On Linux the runner is `.build/<triple>/debug/ProxyPackageTests.xctest`.
    if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
    return dir
}()

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A child process that prints `... listening on HOST:PORT` once ready.
final class ManagedProcess: @unchecked Sendable {
    let process = Process()
    private let output = Pipe()
    private(set) var port: UInt16 = 0
    private let lock = NSLock()
    private var captured = ""

    /// `executable` is a product name, or a full path with `absolute`.
    /// `environment` adds to (or replaces entries of) the test's own environment.
    init(_ executable: String, _ arguments: [String], absolute: Bool = false, environment: [String: String] = [:]) throws {
        process.executableURL = absolute ? URL(fileURLWithPath: executable) : productsDirectory.appendingPathComponent(executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let handle = output.fileHandleForReading
        // Until the ready line, read the pipe here (poll + read): the start-up wait then does not
        // depend on a dispatch thread being free to run a readability handler on a loaded machine.
        let deadline = Date().addingTimeInterval(10)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var pfd = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            var n = 0
            if poll(&pfd, 1, 10) > 0 {
                n = retryingOnEINTR { chunk.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) } }
                if n > 0 { append(chunk[0..<n]) }
            }
            if let p = parsePort() { port = p; break }
            if n <= 0 && !process.isRunning { break }  // exited, and all it wrote is read
        }
        guard port != 0 else {
            let state = process.isRunning ? "still running, silent" : "exited with status \(process.terminationStatus)"
            let out = log
            process.terminate()
            throw HarnessError("\(executable) did not start within 10 s (\(state)): \(out)")
        }
        // From here on a background thread reads, so the child never blocks on a full pipe.
        handle.readabilityHandler = { [weak self] h in
            let data = h.availableData
            guard let self, !data.isEmpty else { return }
            self.append(data[...])
        }
    }

    private func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        lock.lock()
        captured += String(decoding: bytes, as: UTF8.self)
        lock.unlock()
    }

    var log: String {
        lock.lock(); defer { lock.unlock() }
        return captured
    }

    private func parsePort() -> UInt16? {
        let text = log
        guard let r = text.range(of: "listening on ") else { return nil }
        let rest = text[r.upperBound...]
        guard let line = rest.split(separator: "\n", maxSplits: 1).first, rest.contains("\n") else { return nil }
        let addr = line.split(separator: " ").first.map(String.init) ?? ""
        guard let colon = addr.lastIndex(of: ":") else { return nil }
        return UInt16(addr[addr.index(after: colon)...])
    }

    var pid: Int32 { process.processIdentifier }

    /// The ports of the listeners after the first, from the start line's `; also on ADDR` parts.
    var otherListenerPorts: [UInt16] {
        guard let line = log.split(separator: "\n").first(where: { $0.contains("listening on ") }) else { return [] }
        return line.components(separatedBy: "; also on ").dropFirst().compactMap { part in
            let addr = part.split(separator: " ").first.map(String.init) ?? ""
            return addr.lastIndex(of: ":").flatMap { UInt16(addr[addr.index(after: $0)...]) }
        }
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)
            awaitTermination(process)
        }
        output.fileHandleForReading.readabilityHandler = nil
    }

    /// Waits for exit up to `seconds`; returns the exit status or nil.
    func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// `VmHWM` (peak resident set) in KiB.
    var peakRSSKiB: Int { procStatus("VmHWM") }
    /// `VmRSS` in KiB.
    var rssKiB: Int { procStatus("VmRSS") }

    private func procStatus(_ key: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
        for line in s.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
        }
        return -1
    }

    /// User + system CPU time consumed so far, in clock ticks.
    var cpuTicks: Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return -1 }
        let fields = s[s.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    /// Open file descriptors of the process.
    var openFDs: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }

    deinit { stop() }
}

/// A running test backend.
func startBackend(port: UInt16 = 0) throws -> ManagedProcess {
    try ManagedProcess("test-backend", [String(port)])
}

/// Starts the proxy with a config (JSON text) written to a temporary file.
/// ThreadSanitizer's shadow memory multiplies a process's resident size, and AddressSanitizer's
/// quarantine (256 MiB of freed blocks held back) adds to it: absolute memory bounds scale by this
/// under `make test-tsan` and `make test-asan` (growth checks do not).
let sanitizerMemoryFactor = ProcessInfo.processInfo.environment["TSAN_OPTIONS"] != nil ? 8
    : ProcessInfo.processInfo.environment["LSAN_OPTIONS"] != nil ? 10 : 1

/// Starts the proxy on a free port with `workers` loops: two by default, so every integration
/// test also exercises more than one worker (and ThreadSanitizer sees them in `make test-tsan`).
func startProxy(config: String, workers: Int = 2, extraArguments: [String] = []) throws -> ManagedProcess {
    let file = writeTempFile(config, suffix: ".json")
    return try ManagedProcess("proxy", ["--config", file, "--listen", "127.0.0.1:0", "--workers", String(workers)] + extraArguments)
}

func writeTempFile(_ text: String, suffix: String) -> String {
    let path = NSTemporaryDirectory() + "proxy-test-\(UUID().uuidString)\(suffix)"
    _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    return path
}

/// A config with the given backends (ports) and fast health checks.
func proxyConfig(backends ports: [UInt16], intervalMs: Int = 100, upstreamMs: Int = 30000, responseIdleMs: Int = 60000,
                 healthy: Int = 1, unhealthy: Int = 1, extra: String = "") -> String {
    let list = ports.enumerated().map { "{\"id\":\"b\($0.offset + 1)\",\"url\":\"http://127.0.0.1:\($0.element)\"}" }
    return """
    {"backends":[\(list.joined(separator: ","))],
     "health_check":{"path":"/health","interval_ms":\(intervalMs),"timeout_ms":500,"healthy_threshold":\(healthy),"unhealthy_threshold":\(unhealthy)},
     "timeouts":{"connect_ms":1000,"upstream_ms":\(upstreamMs),"response_idle_ms":\(responseIdleMs),"client_header_ms":5000,"idle_ms":60000}\(extra)}
    """
}

/// Repeats a blocking socket call that a signal interrupted. On a socket with `SO_RCVTIMEO` or
/// `SO_SNDTIMEO`, Linux never restarts `recv`/`send`/`accept` after a signal handler ran, even
/// with `SA_RESTART` (signal(7)), so a stray signal would read as an error or a closed peer.
func retryingOnEINTR<N: BinaryInteger>(_ call: () -> N) -> N {
    while true {
        let n = call()
        if n >= 0 || errno != EINTR { return n }
    }
}

/// Polls `condition` every 20 ms for up to `seconds`.
func eventually(_ seconds: Double = 5, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if try condition() { return true }
        usleep(20_000)
    } while Date() < deadline
    return false
}

// MARK: - A minimal blocking HTTP/1.1 client over raw sockets (independent of the proxy's parser)

struct HTTPResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]
    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
    }
}

final class TestConnection {
    let fd: Int32
    private var buffer: [UInt8] = []
    private(set) var closedByPeer = false

    /// `receiveBuffer` sets `SO_RCVBUF` before connecting (the window is scaled at the handshake:
    /// set later it does not make a slow reader as slow).
    init(port: UInt16, timeoutSeconds: Int = 10, receiveBuffer: Int32? = nil) throws {
        guard let fd = connectToLoopback(port, configure: { fd in
            if var v = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, socklen_t(MemoryLayout<Int32>.size)) }
        }) else { throw HarnessError("connect to \(port) failed: errno \(errno)") }
        self.fd = fd
        setTimeout(seconds: timeoutSeconds)
    }

    func setTimeout(seconds: Int, microseconds: Int = 0) {
        var tv = timeval(tv_sec: seconds, tv_usec: microseconds)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sets a small receive buffer (before reading) to make a slow reader really slow.
    func setReceiveBuffer(_ bytes: Int32) {
        var v = bytes
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    func send(_ s: String) throws { try send(Array(s.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = retryingOnEINTR { bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            if n <= 0 { throw HarnessError("send failed: errno \(errno)") }
            off += n
        }
    }

    /// Bytes read but not consumed yet.
    var buffered: [UInt8] { buffer }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads more bytes into the buffer; false on EOF/error/timeout.
    @discardableResult
    func fill(max: Int = 65536) -> Bool {
        var tmp = [UInt8](repeating: 0, count: max)
        let n = retryingOnEINTR { tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
        if n <= 0 { if n == 0 { closedByPeer = true }; return false }
        buffer.append(contentsOf: tmp[0..<n])
        return true
    }

    /// Reads until every one of `texts` is in the buffer, for at most about `seconds` (plus one
    /// read timeout). What is already buffered counts first: a blocking read before looking
    /// would wait out the socket's timeout when everything arrived in an earlier read.
    func waitForText(_ texts: String..., seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let text = String(decoding: buffer, as: UTF8.self)
            if texts.allSatisfy({ text.contains($0) }) { return true }
            guard Date() < deadline, fill() else { return false }
        }
    }

    /// Reads until EOF (or timeout) and returns everything received.
    func readToEnd() -> [UInt8] {
        while fill() {}
        defer { buffer.removeAll() }
        return buffer
    }

    private func readLine() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                var line = Array(buffer[..<i])
                buffer.removeFirst(i + 1)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            guard fill() else { throw HarnessError("connection ended while reading a line") }
        }
    }

    private func readExactly(_ n: Int, into body: inout [UInt8], discard: Bool = false, check: ((ArraySlice<UInt8>) -> Void)? = nil) throws {
        var left = n
        while left > 0 {
            if buffer.isEmpty { guard fill() else { throw HarnessError("connection ended with \(left) body bytes missing") } }
            let take = min(left, buffer.count)
            check?(buffer[..<take])
            if !discard { body.append(contentsOf: buffer[..<take]) }
            buffer.removeFirst(take)
            left -= take
        }
    }

    /// Reads one response. `headRequest` for responses to HEAD. With `discardBody` the body is
    /// not kept; `onBody` still sees every byte (for hashing big downloads).
    func readResponse(headRequest: Bool = false, discardBody: Bool = false,
                      onBody: ((ArraySlice<UInt8>) -> Void)? = nil) throws -> HTTPResponse {
        var status = 0
        var headers: [(String, String)] = []
        repeat {
            let statusLine = try readLine()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let s = Int(parts[1]) else {
                throw HarnessError("bad status line: \(statusLine)")
            }
            status = s
            headers = []
            while true {
                let line = try readLine()
                if line.isEmpty { break }
                guard let colon = line.firstIndex(of: ":") else { throw HarnessError("bad header line: \(line)") }
                headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
        } while status >= 100 && status < 200 && status != 101
        var response = HTTPResponse(status: status, headers: headers, body: [])
        if headRequest || status == 204 || status == 304 { return response }
        var body: [UInt8] = []
        if let te = response.header("Transfer-Encoding"), te.lowercased() == "chunked" {
            while true {
                let sizeLine = try readLine()
                guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else {
                    throw HarnessError("bad chunk size line: \(sizeLine)")
                }
                if size == 0 {
                    while try !readLine().isEmpty {}
                    break
                }
                try readExactly(size, into: &body, discard: discardBody, check: onBody)
                _ = try readLine()
            }
        } else if let cl = response.header("Content-Length"), let n = Int(cl) {
            try readExactly(n, into: &body, discard: discardBody, check: onBody)
        } else {
            while true {
                if !buffer.isEmpty {
                    onBody?(buffer[...])
                    if !discardBody { body.append(contentsOf: buffer) }
                    buffer.removeAll()
                }
                if !fill() { break }
            }
        }
        response.body = body
        return response
    }

    /// Sends one request and reads its response.
    func request(_ method: String = "GET", _ path: String, headers: [String: String] = [:], body: [UInt8] = [],
                 http10: Bool = false) throws -> HTTPResponse {
        var head = "\(method) \(path) HTTP/1.\(http10 ? 0 : 1)\r\nHost: test.local\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try send(Array(head.utf8) + body)
        return try readResponse(headRequest: method == "HEAD")
    }
}

/// One request on a fresh connection.
func get(_ port: UInt16, _ path: String, headers: [String: String] = [:]) throws -> HTTPResponse {
    try TestConnection(port: port).request("GET", path, headers: headers)
}

/// A hand-scripted origin for fault tests: for every request head it receives (health probes
/// excepted: they get a 200), it calls `handler` on the connection's own thread, which answers,
/// stays silent, closes or resets as the test needs.
final class ScriptedOrigin: @unchecked Sendable {
    /// One accepted connection, as the handler sees it.
    final class Connection {
        let fd: Int32
        /// Requests seen on this connection so far, this one included.
        var requestCount = 0
        /// Bytes that arrived after the head in the same reads (body bytes the handler reads
        /// itself from `fd` come after these).
        var readAfterHead: [UInt8] = []
        init(fd: Int32) { self.fd = fd }

        func send(_ text: String) { send(Array(text.utf8)) }
        func send(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        /// Closes with RST instead of FIN.
        func reset() {
            var l = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
            Glibc.shutdown(fd, Int32(SHUT_RDWR))
        }
    }

    /// What to do after handling a request.
    enum Next { case keepReading, close, holdOpen }

    let fd: Int32
    let port: UInt16
    private let lock = NSLock()
    private var _requests: [String] = []
    private var _connections = 0
    private var stopped = false
    /// Request lines received (health probes excluded), in order.
    var requests: [String] { lock.lock(); defer { lock.unlock() }; return _requests }
    /// Connections that carried at least one request.
    var connections: Int { lock.lock(); defer { lock.unlock() }; return _connections }

    init(_ handler: @escaping @Sendable (Connection, String) -> Next) {
        (fd, port) = listenOnLoopback()
        acceptEachOnItsOwnThread(fd) { [self] c in serve(Connection(fd: c), handler) }
    }

    private func serve(_ conn: Connection, _ handler: (Connection, String) -> Next) {
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(conn.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var next = Next.keepReading
        loop: while true {
            if isStopped { break }
            let n = retryingOnEINTR { buf.withUnsafeMutableBytes { recv(conn.fd, $0.baseAddress, $0.count, 0) } }
            if n == 0 { break }
            if n < 0 { if errno == EAGAIN || errno == EWOULDBLOCK { continue } else { break } }
            if next == .holdOpen { continue }
            data.append(contentsOf: buf[0..<n])
            while let end = data.firstRange(of: [13, 10, 13, 10]) {
                let head = String(decoding: data[..<end.lowerBound], as: UTF8.self)
                data.removeFirst(end.upperBound)
                let line = head.components(separatedBy: "\r\n").first ?? ""
                if line.hasPrefix("GET /health ") {
                    conn.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    break loop
                }
                conn.requestCount += 1
                lock.lock()
                _requests.append(line)
                if conn.requestCount == 1 { _connections += 1 }
                lock.unlock()
                conn.readAfterHead = data
                next = handler(conn, head)
                if next == .close { break loop }
                if next == .holdOpen { data.removeAll(); break }
            }
        }
        close(conn.fd)
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    /// Stops accepting. Idempotent: `deinit` runs it again, and closing a descriptor number twice
    /// could close a socket another test has been given since.
    func stop() {
        lock.lock()
        let wasStopped = stopped
        stopped = true
        lock.unlock()
        guard !wasStopped else { return }
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    deinit { stop() }
}

/// An origin that answers every request with fixed bytes and closes (`reply == nil`: reads the
/// request and never answers).
func fixedReplyOrigin(_ reply: String?) -> ScriptedOrigin {
    ScriptedOrigin { conn, _ in
        guard let reply else { return .holdOpen }
        conn.send(reply)
        return .close
    }
}

/// An origin that keeps connections alive for exactly one response, then closes the connection
/// when the next request arrives on it, without answering: the keep-alive race, made certain.
/// Each response body names its connection: "connection N".
func oneShotKeepAliveOrigin() -> ScriptedOrigin {
    let counter = Counter()
    return ScriptedOrigin { conn, _ in
        guard conn.requestCount == 1 else { return .close }
        let body = "connection \(counter.next())"
        conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        return .keepReading
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
}

/// Accepts connections on `fd` until it is closed; each is served by `serve` on its own thread.
func acceptEachOnItsOwnThread(_ fd: Int32, _ serve: @escaping @Sendable (Int32) -> Void) {
    Thread {
        while true {
            let c = retryingOnEINTR { accept(fd, nil, nil) }
            if c < 0 { return }
            Thread { serve(c) }.start()
        }
    }.start()
}

/// A listening socket on 127.0.0.1 with a kernel-chosen port.
func listenOnLoopback() -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    listen(fd, 64)
    var bound = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &bound) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return (fd, UInt16(bigEndian: bound.sin_port))
}

/// Checks bodies from the test backend's `/stream` (byte i is `i % 251`) with `memcmp` against a
/// precomputed copy of the pattern: byte-by-byte Swift loops made the big downloads take many
/// seconds in debug builds and under ThreadSanitizer.
struct StreamPatternCheck {
    private static let period = 251
    private static let pattern: [UInt8] = (0..<(period * 256)).map { UInt8($0 % period) }
    private(set) var bytes = 0
    /// Pieces (of up to 64 KiB) that differ from the pattern.
    private(set) var wrongPieces = 0

    mutating func consume(_ slice: ArraySlice<UInt8>) {
        slice.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let start = (bytes + done) % Self.period
                let n = min(raw.count - done, Self.pattern.count - start)
                let differs = Self.pattern.withUnsafeBytes { p in memcmp(raw.baseAddress! + done, p.baseAddress! + start, n) != 0 }
                if differs { wrongPieces += 1 }
                done += n
            }
        }
        bytes += slice.count
    }
}

// MARK: - Python helpers (WebSocket tests)

/// The repository root (this file is `Tests/IntegrationTests/Harness.swift`).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

private let pythonSetupLock = NSLock()

/// A Python interpreter with the `websockets` package from PyPI, in a virtual environment under
/// `.build/pyenv` that the first caller creates (about 10 s; later runs reuse it). The tests use
/// it as an independent WebSocket implementation on both sides of the proxy.
func pythonWithWebsockets() throws -> String { try testPython(["websockets": "websockets"]) }

/// The tests' Python (a venv in `.build/pyenv`) with `packages` (module name: pip name)
/// installed from PyPI the first time they are needed.
func testPython(_ packages: [String: String]) throws -> String {
    pythonSetupLock.lock()
    defer { pythonSetupLock.unlock() }
    let venv = packageRoot.appendingPathComponent(".build/pyenv")
    let python = venv.appendingPathComponent("bin/python").path
    let imports = "import " + packages.keys.sorted().joined(separator: ", ")
    func hasAll() -> Bool { run(python, ["-c", imports]) == 0 }
    if FileManager.default.fileExists(atPath: python) && hasAll() { return python }
    var output = ""
    guard FileManager.default.fileExists(atPath: python) || run("/usr/bin/env", ["python3", "-m", "venv", venv.path], output: &output) == 0,
          run(python, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + packages.values.sorted(), output: &output) == 0,
          hasAll() else {
        throw HarnessError("could not set up \(venv.path) with \(packages.values.sorted().joined(separator: ", ")) "
            + "(python3 -m venv, pip install): \(output)")
    }
    return python
}

