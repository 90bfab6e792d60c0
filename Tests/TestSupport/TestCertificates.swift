import Foundation
import Glibc

/// Certificates made for a test with the `openssl` command (Debian's `openssl`, which
/// `libssl-dev` brings): a throw-away CA and leaves signed by it, in a fresh temporary folder.
public struct TestCertificates {
    public let directory: String
    public var caFile: String { directory + "/ca.pem" }

    /// A CA valid for two days, in a new temporary folder.
    public init() throws {
        directory = NSTemporaryDirectory() + "proxy-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", directory + "/ca.key", "-out", directory + "/ca.pem", "-days", "2",
                          "-subj", "/CN=proxy test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    /// A leaf named `file` for `names` (DNS names, or IP addresses) signed by the CA, with an
    /// ECDSA P-256 key or, with `rsa`, an RSA 2048 one. Returns the certificate and key paths.
    @discardableResult
    public func leaf(_ file: String, names: [String], rsa: Bool = false, days: Int = 2) throws -> (cert: String, key: String) {
        let base = directory + "/" + file
        let keyArgs = rsa ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        try Self.openssl(["req"] + keyArgs + ["-nodes", "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=\(names.first ?? file)"])
        let san = names.map { $0.first!.isNumber || $0.contains(":") ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
        try "subjectAltName=\(san)\n".write(toFile: base + ".ext", atomically: true, encoding: .utf8)
        try Self.openssl(["x509", "-req", "-in", base + ".csr", "-CA", caFile, "-CAkey", directory + "/ca.key",
                          "-CAcreateserial", "-out", base + ".pem", "-days", String(days), "-extfile", base + ".ext"])
        return (base + ".pem", base + ".key")
    }

    public func remove() { try? FileManager.default.removeItem(atPath: directory) }

    private static func openssl(_ arguments: [String]) throws {
        var output = ""
        guard run("/usr/bin/openssl", arguments, output: &output) == 0 else {
            throw CertificateError(message: "openssl \(arguments.first ?? ""): \(output)")
        }
    }
}

public struct CertificateError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Waits for `process` to end without `Process.waitUntilExit()`: that spins the calling thread's
/// run loop, creating one on a test's dispatch worker thread, and when such a thread later exits,
/// Foundation's run-loop finaliser allocates inside ThreadSanitizer's thread teardown and crashes
/// the test runner (seen in `make test-tsan`). `isRunning` is kept by Foundation's own thread.
public func awaitTermination(_ process: Process) {
    while process.isRunning { usleep(2_000) }
}

/// Runs a program to completion (bounded by the program itself); returns its exit status.
///
/// Its output is read while it runs and drained once it has exited, not read until the end of
/// file: a process another test starts at the same moment can inherit the pipe's write end
/// (Foundation's pipes are not close-on-exec), and the end of file would then wait for that
/// process (a backend living as long as its test) — two tests deadlocked on `testPython`'s lock
/// that way. (A temporary file instead of the pipe crashed libdispatch: a stale readability
/// source met the file's reused descriptor.)
@discardableResult
public func run(_ program: String, _ arguments: [String], output: UnsafeMutablePointer<String>? = nil) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return -1 }
    let fd = pipe.fileHandleForReading.fileDescriptor
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    func readOnce() -> Int {
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 { data += chunk[0..<n] }
            if n >= 0 || errno != EINTR { return n }
        }
    }
    while true {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&pfd, 1, 20) > 0 {
            if readOnce() == 0 { break }  // the end: every writer is gone
            continue
        }
        if !p.isRunning {
            // Exited: what it wrote is in the pipe now; take it without waiting for an end.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            while readOnce() > 0 {}
            break
        }
    }
    awaitTermination(p)
    output?.pointee = String(decoding: data, as: UTF8.self)
    return p.terminationStatus
}
