import Foundation
import Glibc
import Testing
import TestSupport
@testable import Proxy

/// The TLS engine and `TLSStream` on real loopback sockets, both ends in one loop: handshakes,
/// SNI certificate choice, ALPN, bulk data across read pauses, and the ways a handshake fails.
@Suite(.serialized) struct TLSStreamTests {
    /// A loop with a listener whose accepted sockets become server `TLSStream`s.
    final class Pair {
        let loop = EventLoop()
        let listener: TCPListener
        var servers: [TLSStream] = []
        var serverHandshakes: [String?] = []
        let port: UInt16

        init(server context: TLSContext, handshakeTimeoutMs: UInt64 = 5000) throws {
            listener = TCPListener(loop: loop)
            try listener.listen(on: SocketAddress(ip: "127.0.0.1", port: 0)!)
            port = listener.localAddress!.port
            listener.onAccept = { [unowned self] tcp in
                let s = try! TLSStream(transport: tcp, context: context, handshakeTimeoutMs: handshakeTimeoutMs)
                s.onHandshake = { [unowned self] outcome in self.serverHandshakes.append(outcome.failureReason) }
                self.servers.append(s)
            }
        }

        /// A client `TLSStream` connecting to the listener.
        func client(_ context: TLSContext, serverName: String?) throws -> (stream: () -> TLSStream?, handshake: () -> String??) {
            let tcp = TCPStream(loop: loop)
            var stream: TLSStream?
            var outcome: String??
            try tcp.connect(to: SocketAddress(ip: "127.0.0.1", port: port)!) { rc in
                guard rc == 0 else { outcome = .some("connect failed \(rc)"); return }
                stream = try! TLSStream(transport: tcp, context: context, serverName: serverName, handshakeTimeoutMs: 5000)
                stream!.onHandshake = { outcome = .some($0.failureReason) }
            }
            return ({ stream }, { outcome })
        }

        func spin(seconds: Double = 5, until condition: () -> Bool) {
            let deadline = Date().addingTimeInterval(seconds)
            while !condition() && Date() < deadline { _ = loop.runOnce(wait: false); usleep(200) }
        }

        func close() {
            for s in servers { s.close() }
            listener.close()
            _ = loop.runOnce(wait: false)
        }
    }

    @Test func sniPicksTheCertificateAndTheClientVerifiesIt() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let one = try certs.leaf("one", names: ["one.test"])
        let two = try certs.leaf("two", names: ["*.two.test"], rsa: true)
        let exact = try certs.leaf("exact", names: ["x.two.test"])
        let server = try TLSContext(certificates: [one, two, exact])
        let client = try TLSContext(clientCAFile: certs.caFile)
        let pair = try Pair(server: server)
        defer { pair.close() }
        for (name, ok) in [("one.test", true), ("a.two.test", true), ("x.two.test", true), ("other.test", false)] {
            let c = try pair.client(client, serverName: name)
            pair.spin { c.handshake() != nil }
            let outcome = try #require(c.handshake(), "\(name): no handshake outcome")
            #expect((outcome == nil) == ok, "\(name): \(outcome ?? "ok")")
            if ok {
                let s = try #require(c.stream())
                #expect(s.version == "TLSv1.3")
                #expect(String(decoding: s.negotiatedProtocol, as: UTF8.self) == "http/1.1")
            }
            c.stream()?.close()
        }
        // The server saw the names the clients sent.
        pair.spin { pair.serverHandshakes.count == 4 }
        #expect(pair.servers.compactMap(\.serverName).sorted() == ["a.two.test", "one.test", "other.test", "x.two.test"])
    }

    @Test func bulkDataArrivesIntactInBothDirectionsAcrossReadPauses() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try TLSContext(certificates: [try certs.leaf("s", names: ["localhost", "127.0.0.1"])])
        let pair = try Pair(server: server)
        defer { pair.close() }
        let c = try pair.client(try TLSContext(clientCAFile: certs.caFile), serverName: "localhost")
        pair.spin { c.handshake() != nil && !pair.servers.isEmpty }
        let client = try #require(c.stream()), s = try #require(pair.servers.first)
        // The server echoes; its reader pauses after every read and resumes on the next loop turn,
        // so plaintext left inside the engine has to come from the deferred delivery.
        let resumer = Timer(loop: pair.loop)
        resumer.onFire = { s.resumeReading(.backpressure) }
        s.onRead = { bytes in
            s.write(bytes)
            s.pauseReading(.backpressure)
            resumer.start(timeoutMs: 0)
        }
        s.startReading()
        var received: [UInt8] = []
        client.onRead = { received.append(contentsOf: $0) }
        client.startReading()
        let size = 3 << 20
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        var sent = 0
        while sent < size {
            let n = min(100_000, size - sent)
            payload.withUnsafeBytes { client.write(UnsafeRawBufferPointer(rebasing: $0[sent..<(sent + n)])) }
            sent += n
            pair.spin(seconds: 2) { !client.isCongested }
        }
        pair.spin(seconds: 20) { received.count >= size }
        #expect(received.count == size)
        #expect(received == payload)
        #expect(client.bytesWritten == UInt64(size) && s.bytesRead == UInt64(size) && s.bytesWritten == UInt64(size))
        // close_notify reaches the reader as an orderly end.
        var end: Int32?
        s.onReadEnd = { end = $0 }
        client.close()
        pair.spin { end != nil }
        #expect(end == UVError.eof)
        resumer.close()
    }

    @Test func aKeyUpdateFloodEndsTheSessionButAFewAreFine() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let pair = try Pair(server: try TLSContext(certificates: [try certs.leaf("s", names: ["localhost"])]))
        defer { pair.close() }
        let context = try TLSContext(clientCAFile: certs.caFile)
        for (updates, survives) in [(20, true), (150, false)] {
            let c = try pair.client(context, serverName: "localhost")
            pair.spin { c.handshake() != nil && pair.servers.count == pair.serverHandshakes.count && !pair.servers.isEmpty }
            let client = try #require(c.stream()), s = try #require(pair.servers.last)
            var received: [UInt8] = [], end: Int32?
            s.onRead = { received.append(contentsOf: $0) }
            s.onReadEnd = { end = $0 }
            s.startReading()
            for _ in 0..<updates { #expect(client.sendKeyUpdate()) }
            client.write(Array("after".utf8))
            pair.spin { received.count >= 5 || end != nil }
            if survives {
                #expect(String(decoding: received, as: UTF8.self) == "after" && end == nil, "\(updates) key updates")
            } else {
                #expect(end == UVError.protocolError, "\(updates) key updates end the session")
                #expect(received.isEmpty, "nothing after the flood is delivered")
                #expect(s.failureReason?.contains("too many TLS KeyUpdate") == true, "\(s.failureReason ?? "-")")
            }
            client.close()
        }
    }

    @Test func aSilentClientTimesOutPlainHTTPIsRecognisedAndGarbageFails() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try TLSContext(certificates: [try certs.leaf("s", names: ["localhost"])])
        let pair = try Pair(server: server, handshakeTimeoutMs: 300)
        defer { pair.close() }
        var ended: [Int32] = []
        let silent = try #require(connectToLoopback(pair.port))
        defer { Glibc.close(silent) }
        pair.spin { pair.servers.count == 1 }
        pair.servers[0].onReadEnd = { ended.append($0) }
        pair.servers[0].startReading()
        let start = Date()
        pair.spin { !pair.serverHandshakes.isEmpty }
        #expect(pair.serverHandshakes.first == .some("the TLS handshake did not complete in time"))
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(ended == [UVError.protocolError])

        let plain = try #require(connectToLoopback(pair.port))
        defer { Glibc.close(plain) }
        _ = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".withCString { send(plain, $0, strlen($0), 0) }
        pair.spin { pair.serverHandshakes.count == 2 }
        #expect(pair.serverHandshakes.last == .some("plain HTTP"))
        // Plain HTTP passes through unencrypted, so the HTTP layer can answer it readably.
        var received: [UInt8] = []
        pair.servers[1].onRead = { received.append(contentsOf: $0) }
        pair.servers[1].startReading()
        pair.spin { received.count >= 27 }
        #expect(String(decoding: received, as: UTF8.self) == "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        pair.servers[1].write(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8))
        var answer = [UInt8](repeating: 0, count: 64)
        var got = 0
        pair.spin { got = recv(plain, &answer, 64, Int32(MSG_DONTWAIT)); return got > 0 }
        #expect(String(decoding: answer.prefix(max(got, 0)), as: UTF8.self).hasPrefix("HTTP/1.1 400"))

        let garbage = try #require(connectToLoopback(pair.port))
        defer { Glibc.close(garbage) }
        _ = "\u{1}\u{2}\u{3}\u{4}\u{5}garbage".withCString { send(garbage, $0, strlen($0), 0) }
        pair.spin { pair.serverHandshakes.count == 3 }
        let reason = try #require(pair.serverHandshakes.last ?? nil)
        #expect(reason.contains("TLS handshake failed"), "\(reason)")
    }

    @Test func brokenCertificateFilesAreNamedWithTheReason() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let a = try certs.leaf("a", names: ["a.test"]), b = try certs.leaf("b", names: ["b.test"])
        func reason(_ pairs: [(cert: String, key: String)]) -> String {
            do { _ = try TLSContext(certificates: pairs); return "accepted" } catch { return error.message }
        }
        #expect(reason([(a.cert, b.key)]).contains("does not match"))
        #expect(reason([(certs.directory + "/missing.pem", a.key)]).contains("missing.pem: cannot open"))
        #expect(reason([(a.key, a.key)]).contains("no PEM certificate"))
        let context = try TLSContext(certificates: [a, b])
        #expect(context.certificates.map(\.names) == [["a.test"], ["b.test"]])
        #expect(context.certificates[0].notAfter > Int64(Date().timeIntervalSince1970))
    }
}

extension TLSHandshakeOutcome {
    /// nil for a completed handshake; "plain HTTP", or the failure's reason.
    var failureReason: String? {
        switch self {
        case .done: nil
        case .plaintextHTTP: "plain HTTP"
        case .failed(let failure): failure.reason
        }
    }
}
