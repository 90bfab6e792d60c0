@testable import Proxy
import Testing

@Suite struct ProxyProtocolTests {
    private func parse(_ text: String) -> ProxyProtocol.Verdict { ProxyProtocol.parse(Array(text.utf8)[...]) }

    @Test func version1LinesNameTheClient() {
        let line = "PROXY TCP4 203.0.113.9 192.0.2.1 51000 8080\r\nGET / HTTP/1.1\r\n"
        #expect(parse(line) == .header(length: 45, source: SocketAddress(ip: "203.0.113.9", port: 51000)))
        #expect(parse("PROXY TCP6 2001:db8::9 2001:db8::1 1 443\r\n") == .header(length: 42, source: SocketAddress(ip: "2001:db8::9", port: 1)))
        #expect(parse("PROXY UNKNOWN\r\n") == .header(length: 15, source: nil))
        #expect(parse("PROXY UNKNOWN ffff:f...f ffff:f...f 65535 65535\r\n") == .header(length: 49, source: nil))
        // Every proper prefix of a header is incomplete, never invalid.
        for n in 1..<45 { #expect(ProxyProtocol.parse(Array(line.utf8).prefix(n)) == .incomplete, "\(n)") }
    }

    @Test func malformedVersion1LinesAreRefused() {
        for bad in [
            "GET / HTTP/1.1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            "PROXY TCP4 ::1 ::1 1 2\r\n", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            "PROXY " + String(repeating: "A", count: 120),
            "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "PROXY TCP4 1.2.3.4\u{0}X 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8\u{0} 1 2\r\n",
        ] {
            guard case .invalid = parse(bad) else { Issue.record("accepted \(bad.debugDescription): \(parse(bad))"); continue }
        }
        #expect(parse("P") == .incomplete && parse("PROXY") == .incomplete)
        guard case .invalid = parse("X") else { Issue.record("X"); return }
    }

    @Test func version2HeadersNameTheClient() {
        let source = SocketAddress(ip: "198.51.100.7", port: 40000)!
        let destination = SocketAddress(ip: "192.0.2.1", port: 443)!
        let v2 = ProxyProtocol.header(version: 2, source: source, destination: destination)
        #expect(v2.count == 28 && v2.prefix(12).elementsEqual(ProxyProtocol.signature) && v2[12] == 0x21 && v2[13] == 0x11)
        #expect(ProxyProtocol.parse((v2 + Array("GET".utf8))[...]) == .header(length: 28, source: source))
        for n in 1..<28 { #expect(ProxyProtocol.parse(v2.prefix(n)) == .incomplete, "\(n)") }
        // IPv6, and TLVs after the addresses (skipped).
        let six = SocketAddress(ip: "2001:db8::7", port: 9)!
        var withTLV = ProxyProtocol.header(version: 2, source: six, destination: SocketAddress(ip: "2001:db8::1", port: 80)!)
        withTLV[15] += 5
        withTLV += [0x04, 0x00, 0x02, 0xAB, 0xCD]
        #expect(ProxyProtocol.parse(withTLV[...]) == .header(length: 16 + 36 + 5, source: six))
        // LOCAL (a health check from the balancer), UNSPEC and UNIX families: no client named.
        #expect(ProxyProtocol.parse(ProxyProtocol.localHeader(version: 2)[...]) == .header(length: 16, source: nil))
        #expect(ProxyProtocol.parse((ProxyProtocol.signature + [0x21, 0x31, 0x00, 0x04, 1, 2, 3, 4])[...]) == .header(length: 20, source: nil))
        #expect(ProxyProtocol.parse(ProxyProtocol.localHeader(version: 1)[...]) == .header(length: 15, source: nil))
        // Mixed families go out as IPv6 with the IPv4 address mapped.
        let mixed = ProxyProtocol.header(version: 2, source: source, destination: SocketAddress(ip: "::1", port: 80)!)
        #expect(mixed[13] == 0x21 && ProxyProtocol.parse(mixed[...]) == .header(length: 52, source: SocketAddress(ip: "::ffff:198.51.100.7", port: 40000)))
        let text = ProxyProtocol.header(version: 1, source: source, destination: destination)
        #expect(String(decoding: text, as: UTF8.self) == "PROXY TCP4 198.51.100.7 192.0.2.1 40000 443\r\n")
    }

    @Test func malformedVersion2HeadersAreRefused() {
        let sig = ProxyProtocol.signature
        for bad in [
            sig + [0x11, 0x11, 0x00, 0x0C] + [UInt8](repeating: 0, count: 12),  // version 1 in a v2 header
            sig + [0x22, 0x11, 0x00, 0x0C] + [UInt8](repeating: 0, count: 12),  // command 2
            sig + [0x21, 0x11, 0x00, 0x08] + [UInt8](repeating: 0, count: 8),   // TCP4 without room for its addresses
            sig + [0x21, 0x21, 0x00, 0x0C] + [UInt8](repeating: 0, count: 12),  // TCP6 likewise
            sig + [0x21, 0x11, 0xFF, 0xFF],                                     // 65,535 bytes announced
        ] {
            guard case .invalid = ProxyProtocol.parse(bad[...]) else { Issue.record("accepted \(bad)"); continue }
        }
    }

    @Test func htpasswdHashesAreTakenOnlyAtACostACheckCanAfford() {
        let bcrypt = "$2y$05$" + String(repeating: "a", count: 53)
        #expect(PasswordHash.isSupported(bcrypt))
        #expect(!PasswordHash.isSupported("$2y$17$" + String(repeating: "a", count: 53)), "cost 17")
        #expect(!PasswordHash.isSupported("$2y$05$short"))
        #expect(PasswordHash.isSupported("$6$salt$hash") && PasswordHash.isSupported("$5$rounds=10000$salt$hash"))
        #expect(!PasswordHash.isSupported("$6$rounds=999999999$salt$hash") && !PasswordHash.isSupported("$6$"))
        #expect(!PasswordHash.isSupported("$y$j9T$salt$hash") && !PasswordHash.isSupported("$apr1$x$y") && !PasswordHash.isSupported("{SHA}abc"))
    }
}
