import Foundation
import Glibc

/// A real `redis-server` (Debian's, installed by `make test-deps`) on a free loopback port, with
/// nothing saved to disk; `stop()` kills it. `command` speaks RESP over a fresh connection.
final class RedisServer: @unchecked Sendable {
    let port: UInt16
    private var process: Process?

    init(port: UInt16? = nil) throws {
        self.port = port ?? {
            let (fd, p) = listenOnLoopback()
            close(fd)
            return p
        }()
        try start()
    }

    /// Starts the server (again, after `stop()`), on the same port; waits until it answers PING.
    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                       "--loglevel", "warning", "--enable-debug-command", "yes"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        guard eventually(10, { (try? command("PING")) == "+PONG" }) else {
            stop()
            throw HarnessError("redis-server did not answer on port \(port) within 10 s")
        }
    }

    func stop() {
        guard let p = process else { return }
        process = nil
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:12`, `$3`, `-ERR …`).
    func command(_ arguments: String...) throws -> String {
        guard let fd = connectToLoopback(port, configure: { fd in
            var tv = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }) else { throw HarnessError("cannot connect to redis on \(port)") }
        defer { close(fd) }
        var request = "*\(arguments.count)\r\n"
        for a in arguments { request += "$\(a.utf8.count)\r\n\(a)\r\n" }
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else {
            throw HarnessError("cannot send to redis")
        }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = retryingOnEINTR { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            guard n > 0 else { throw HarnessError("redis closed the connection") }
            reply += chunk[0..<n]
        }
        return String(decoding: reply.prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
    }

    deinit { stop() }
}
