/// The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a load balancer in front
/// sends before anything else on a connection, naming the client it accepted. Reading it
/// (`ProxyProtocolReader`, a listener's `proxy_protocol`) and writing it (`ProxyProtocolHeader`,
/// an upstream's `send_proxy_protocol`). Pure: bytes in, verdicts out; no I/O.
enum ProxyProtocol {
    /// The 12 bytes every version 2 header starts with.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// A version 1 header is at most 107 bytes, its CRLF included.
    static let maxV1Length = 107
    /// Most bytes of addresses and TLVs a version 2 header may carry here (the spec allows 65,535;
    /// load balancers send tens to a few hundred).
    static let maxV2Payload = 4096

    enum Verdict: Equatable {
        /// More bytes are needed (`buffer` is a prefix of a header).
        case incomplete
        /// A header of `length` bytes: the client's address and port (nil: the sender speaks for
        /// itself — a `LOCAL` command, or an `UNKNOWN` / unspecified / non-IP family).
        case header(length: Int, source: SocketAddress?)
        case invalid(String)
    }

    /// Reads a header at the start of `buffer`.
    static func parse(_ buffer: ArraySlice<UInt8>) -> Verdict {
        let b = buffer
        let start = b.startIndex
        // Which version: the first bytes must agree with one of the two openings.
        let v1Opening = Array("PROXY ".utf8)
        let n = min(b.count, signature.count)
        if n > 0 && b.prefix(n).elementsEqual(signature.prefix(n)) {
            return n < signature.count ? .incomplete : parseV2(b)
        }
        let m = min(b.count, v1Opening.count)
        guard m > 0 && b.prefix(m).elementsEqual(v1Opening.prefix(m)) else {
            return .invalid("the connection did not start with a PROXY protocol header")
        }
        // Version 1: a line.
        guard let lf = b.prefix(maxV1Length).firstIndex(of: 0x0A) else {
            return b.count >= maxV1Length ? .invalid("the PROXY v1 line is longer than 107 bytes") : .incomplete
        }
        guard lf > start, b[lf - 1] == 0x0D else { return .invalid("the PROXY v1 line does not end in CRLF") }
        let line = String(decoding: b[start..<(lf - 1)], as: UTF8.self)
        let length = lf + 1 - start
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count >= 2 else { return .invalid("a PROXY v1 line needs a protocol") }
        switch parts[1] {
        case "UNKNOWN":
            return .header(length: length, source: nil)
        case "TCP4", "TCP6":
            guard parts.count == 6 else { return .invalid("a PROXY v1 TCP line has 6 fields: PROXY TCP4 SRC DST SRCPORT DSTPORT") }
            let isV6 = parts[1] == "TCP6"
            // Address text only (no zone ids, no NULs the address parser would stop at).
            let addressBytes: (Substring) -> Bool = { $0.utf8.allSatisfy { b in
                (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: ".") || b == UInt8(ascii: ":") || (b | 0x20 >= 0x61 && b | 0x20 <= 0x66) } }
            guard addressBytes(parts[2]), addressBytes(parts[3]), let port = v1Port(parts[4]), v1Port(parts[5]) != nil,
                  parts[2].contains(":") == isV6, parts[3].contains(":") == isV6,
                  let source = SocketAddress(ip: String(parts[2]), port: port),
                  SocketAddress(ip: String(parts[3]), port: 0) != nil else {
                return .invalid("malformed PROXY v1 line \(JSONText.quote(line))")
            }
            return .header(length: length, source: source)
        default:
            return .invalid("unknown PROXY v1 protocol \(JSONText.quote(String(parts[1])))")
        }
    }

    /// A decimal port without a sign or leading zeros.
    private static func v1Port(_ s: Substring) -> UInt16? {
        guard !s.isEmpty, s.count <= 5, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), s == "0" || !s.hasPrefix("0") else { return nil }
        return UInt16(s)
    }

    private static func parseV2(_ b: ArraySlice<UInt8>) -> Verdict {
        let start = b.startIndex
        guard b.count >= 16 else { return .incomplete }
        let versionAndCommand = b[start + 12]
        guard versionAndCommand >> 4 == 2 else { return .invalid("PROXY v2 header with version \(versionAndCommand >> 4)") }
        let command = versionAndCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2 header with unknown command \(command)") }
        let family = b[start + 13]
        let payload = Int(b[start + 14]) << 8 | Int(b[start + 15])
        guard payload <= maxV2Payload else { return .invalid("PROXY v2 header of \(payload) bytes (at most \(maxV2Payload) here)") }
        guard b.count >= 16 + payload else { return .incomplete }
        let length = 16 + payload
        // LOCAL: the balancer's own connection (a health check): the peer is the client.
        if command == 0 { return .header(length: length, source: nil) }
        let body = b[(start + 16)..<(start + length)]
        switch family {
        case 0x11:  // TCP over IPv4
            guard payload >= 12 else { return .invalid("PROXY v2 TCP4 header too short for its addresses") }
            let port = UInt16(body[body.startIndex + 8]) << 8 | UInt16(body[body.startIndex + 9])
            return .header(length: length, source: SocketAddress(addressBytes: body.prefix(4), port: port))
        case 0x21:  // TCP over IPv6
            guard payload >= 36 else { return .invalid("PROXY v2 TCP6 header too short for its addresses") }
            let port = UInt16(body[body.startIndex + 32]) << 8 | UInt16(body[body.startIndex + 33])
            return .header(length: length, source: SocketAddress(addressBytes: body.prefix(16), port: port))
        default:
            // UNSPEC, UDP, UNIX sockets: no TCP client address to take.
            return .header(length: length, source: nil)
        }
    }

    /// A header for a connection the sender makes on its own behalf (a health check): v1
    /// `PROXY UNKNOWN`, v2 `LOCAL`.
    static func localHeader(version: Int) -> [UInt8] {
        version == 1 ? Array("PROXY UNKNOWN\r\n".utf8) : signature + [0x20, 0x00, 0x00, 0x00]
    }

    /// A header naming `source` as the client of a connection to `destination`: version 1 text
    /// or version 2 binary. Mixed families (an IPv4 client reaching the proxy over IPv6) are sent
    /// with both addresses as IPv6 (IPv4-mapped).
    static func header(version: Int, source: SocketAddress, destination: SocketAddress) -> [UInt8] {
        let sameFamily = source.isIPv6 == destination.isIPv6
        func bytes(_ a: SocketAddress, v6: Bool) -> [UInt8] {
            let raw = a.addressBytes
            return v6 && raw.count == 4 ? [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + raw : raw
        }
        let v6 = !sameFamily || source.isIPv6
        if version == 1 {
            func text(_ a: SocketAddress) -> String {
                v6 && !a.isIPv6 ? "::ffff:" + a.ipString : a.ipString
            }
            return Array("PROXY \(v6 ? "TCP6" : "TCP4") \(text(source)) \(text(destination)) \(source.port) \(destination.port)\r\n".utf8)
        }
        var out = signature
        out.append(0x21)  // version 2, PROXY
        out.append(v6 ? 0x21 : 0x11)
        let body = bytes(source, v6: v6) + bytes(destination, v6: v6)
            + [UInt8(source.port >> 8), UInt8(source.port & 0xFF), UInt8(destination.port >> 8), UInt8(destination.port & 0xFF)]
        out.append(UInt8(body.count >> 8))
        out.append(UInt8(body.count & 0xFF))
        return out + body
    }
}
