import Foundation
import Glibc
import Testing

/// Seeded random and mutated requests over real sockets: whatever arrives, the proxy answers or
/// closes, and keeps serving. (libFuzzer covers the parsers in-process; this covers the
/// connection state machine with real I/O.)
@Suite(.timeLimit(.minutes(3)))
struct SocketFuzzTests {
    @Test func survivesThousandsOfRandomAndMutatedRequests() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],
             "timeouts":{"client_header_ms":500,"client_body_ms":500,"upstream_ms":2000},
             "pool":{"idle_timeout_ms":200}}
            """)
        #expect(try get(proxy.port, "/warm").status == 200)
        usleep(400_000)
        let baselineFDs = proxy.openFDs
        var rng = SplitMix64(seed: 0x5eed_cafe)
        let deadline = Date().addingTimeInterval(60)
        var sent = 0
        var answered = 0
        while sent < 3000 && Date() < deadline {
            let input = rng.nextInput()
            guard let c = try? TestConnection(port: proxy.port, timeoutSeconds: 1) else { continue }
            c.setTimeout(seconds: 0, microseconds: 150_000)
            try? c.send(input)
            // Mostly half-close, so the proxy answers and closes at once; sometimes leave the
            // connection open and let the proxy's timers deal with it.
            if rng.below(8) != 0 { c.shutdownWrite() }
            let reply = c.readToEnd()
            if reply.starts(with: Array("HTTP/1.1 ".utf8)) { answered += 1 }
            sent += 1
        }
        print("socket fuzz: \(sent) inputs, \(answered) answered with a status line")
        #expect(sent >= 1000)
        #expect(proxy.process.isRunning, "proxy died: \(proxy.log.suffix(2000))")
        #expect(try get(proxy.port, "/_health").status == 200)
        #expect(try get(proxy.port, "/after-fuzz").status == 200)
        #expect(eventually(5) { proxy.openFDs <= baselineFDs + 1 }, "fds \(proxy.openFDs) vs baseline \(baselineFDs)")
    }
}

/// A small seeded PRNG (SplitMix64) and the request generator.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    static let seeds: [String] = [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a?b=c HTTP/1.0\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD /stream?bytes=10 HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://x/abs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "GET /_health HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /stream?bytes=100000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    static let tokens: [String] = ["\r\n", "\n", "\r", "\0", " ", "\t", ":", "Transfer-Encoding: chunked\r\n",
                                   "Content-Length: 7\r\n", "Content-Length: -1\r\n", "Host: y\r\n", "ffffffffffffffff\r\n",
                                   "0\r\n\r\n", ";ext=\"v\"", "HTTP/1.1", "/../", "%00", "\u{7f}", "\u{ff}", "Connection: close\r\n"]

    /// A seed request, mutated a few times (byte flips, insertions, deletions, truncation), or
    /// sometimes random bytes.
    mutating func nextInput() -> [UInt8] {
        if below(20) == 0 { return (0..<below(300)).map { _ in UInt8(truncatingIfNeeded: next()) } }
        var bytes = Array(Self.seeds[below(Self.seeds.count)].utf8)
        for _ in 0..<below(4) {
            guard !bytes.isEmpty else { break }
            let at = below(bytes.count)
            switch below(5) {
            case 0: bytes[at] = UInt8(truncatingIfNeeded: next())
            case 1: bytes.insert(contentsOf: Array(Self.tokens[below(Self.tokens.count)].utf8), at: at)
            case 2: bytes.remove(at: at)
            case 3: bytes.removeSubrange(at..<bytes.count)
            default: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + below(40))], at: at)
            }
        }
        return bytes
    }
}

/// The TLS listener under seeded garbage: real ClientHellos truncated and mutated, random
/// records, plaintext. Every connection is answered with an alert, a 400 or a close; the proxy
/// keeps serving HTTPS and gives every descriptor back.
@Suite(.timeLimit(.minutes(3)))
struct TLSSocketFuzzTests {
    @Test func survivesMutatedHandshakesAndRecords() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let leaf = try certs.leaf("site", names: ["localhost"])
        let backend = try startBackend()
        let proxy = try startProxy(config: """
            {"backends":[{"url":"http://127.0.0.1:\(backend.port)"}],
             "listen":["127.0.0.1:0", {"address":"127.0.0.1:0","tls":{"certificates":[{"cert":"\(leaf.cert)","key":"\(leaf.key)"}],
                                                                     "handshake_timeout_ms":300}}],
             "timeouts":{"client_header_ms":500}}
            """)
        let port = try #require(proxy.otherListenerPorts.first)
        func https(_ path: String) -> String {
            TLSListenerTests.shell("curl -sS --max-time 5 --cacert \(certs.caFile) --resolve localhost:\(port):127.0.0.1 "
                + "-o /dev/null -w '%{http_code}' https://localhost:\(port)\(path)").output
        }
        #expect(https("/warm") == "200")
        // A real ClientHello (Python's ssl through memory BIOs: no network), the seed of mutations.
        let hello = TLSListenerTests.shell("""
            python3 -c 'import ssl
            c = ssl.create_default_context(); i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
            s = c.wrap_bio(i, o, server_hostname="localhost")
            try: s.do_handshake()
            except ssl.SSLWantReadError: pass
            print(o.read().hex())'
            """).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let seed = stride(from: 0, to: hello.count - 1, by: 2).compactMap { i -> UInt8? in
            let start = hello.index(hello.startIndex, offsetBy: i)
            return UInt8(hello[start..<hello.index(start, offsetBy: 2)], radix: 16)
        }
        #expect(seed.count > 100 && seed.first == 0x16, "a ClientHello record: \(hello.prefix(40))")
        usleep(400_000)
        let baselineFDs = proxy.openFDs
        var rng = SplitMix64(seed: 0x7157_f022)
        let deadline = Date().addingTimeInterval(45)
        var sent = 0
        while sent < 1000 && Date() < deadline {
            var input: [UInt8]
            switch rng.below(5) {
            case 0: input = Array(seed.prefix(1 + rng.below(seed.count)))  // truncated
            case 1:
                input = seed
                for _ in 0..<(1 + rng.below(6)) { input[rng.below(input.count)] = UInt8(truncatingIfNeeded: rng.next()) }
            case 2:  // a random record header and body
                let length = rng.below(20000)
                input = [UInt8([20, 21, 22, 23, 24][rng.below(5)]), 3, UInt8(rng.below(5)), UInt8(length >> 8), UInt8(length & 0xff)]
                input += (0..<min(length, 2000)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 3: input = seed + (0..<rng.below(3000)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }  // hello, then garbage
            default: input = (0..<(1 + rng.below(600))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            guard let c = try? TestConnection(port: port, timeoutSeconds: 1) else { continue }
            c.setTimeout(seconds: 0, microseconds: 100_000)
            try? c.send(input)
            if rng.below(4) != 0 { c.shutdownWrite() }
            _ = c.readToEnd()
            sent += 1
        }
        print("TLS socket fuzz: \(sent) inputs")
        #expect(sent >= 500)
        #expect(proxy.process.isRunning, "proxy died: \(proxy.log.suffix(2000))")
        #expect(https("/after-fuzz") == "200")
        #expect(eventually(5) { proxy.openFDs <= baselineFDs + 1 }, "fds \(proxy.openFDs) vs baseline \(baselineFDs)")
    }
}
