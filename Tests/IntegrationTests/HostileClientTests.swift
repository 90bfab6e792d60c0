import Foundation
import Glibc
import Testing

/// What one client can do to the proxy's memory and to other clients (issue 12 §1).
@Suite(.timeLimit(.minutes(2)))
struct HostileClientTests {

    /// Writes pipelined copies of `request` for up to `seconds` without reading a byte of the
    /// answers; returns the bytes the proxy took. The send timeout makes a proxy that stopped
    /// reading end the loop early.
    private func floodWithoutReading(port: UInt16, request: String, seconds: Double) throws -> Int {
        let c = try TestConnection(port: port, timeoutSeconds: 1, receiveBuffer: 4096)
        let batch = Array(String(repeating: request, count: 256).utf8)
        var sent = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let n = retryingOnEINTR { batch.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            if n <= 0 { break }  // the proxy stopped reading: the send timed out
            sent += n
        }
        return sent
    }

    private func checkFloodIsBounded(path: String, proxy: ManagedProcess) throws {
        let before = proxy.rssKiB
        let request = "GET \(path) HTTP/1.1\r\nHost: a\r\n\r\n"
        let sent = try floodWithoutReading(port: proxy.port, request: request, seconds: 4)
        let after = proxy.rssKiB
        print("pipelining flood of \(path): \(sent) bytes taken, RSS \(before) -> \(after) KiB")
        #expect(after > 0 && after < 32 * 1024 * sanitizerMemoryFactor, "RSS after the flood \(after) KiB (was \(before))")
        #expect(after - before < 12 * 1024, "RSS grew from \(before) to \(after) KiB")
        // Other clients are served normally meanwhile.
        let r = try get(proxy.port, path)
        #expect(r.status == 200)
    }

    @Test func aClientThatPipelinesLocalAnswersAndNeverReadsCannotGrowMemory() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]), workers: 1)
        try checkFloodIsBounded(path: "/_health", proxy: proxy)
    }

    @Test func aClientThatPipelinesSmallProxiedRequestsAndNeverReadsCannotGrowMemory() throws {
        let backend = try startBackend()
        let proxy = try startProxy(config: proxyConfig(backends: [backend.port]), workers: 1)
        try checkFloodIsBounded(path: "/small", proxy: proxy)
    }
}
