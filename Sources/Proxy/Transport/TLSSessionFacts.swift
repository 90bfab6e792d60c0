/// What a client's TLS handshake settled, as the access log writes it: made once per TLS
/// connection when it is adopted, then only read (lines borrow it; nothing is formatted per
/// request). Cleartext connections have none: the formats write `-` / `null` instead.
///
/// Threading: immutable; the worker's loop.
final class TLSSessionFacts {
    /// ` tls_version=TLSv1.3 tls_cipher=TLS_AES_128_GCM_SHA256 sni="example.com"` (the SNI is the
    /// client's text: quoted and escaped as nginx does, so it cannot pose as further fields; `-`
    /// for none).
    let combined: [UInt8]
    /// `,"tls_version":"TLSv1.3","tls_cipher":"…","sni":"example.com"` (`null` for no SNI).
    let json: [UInt8]
    let version: String
    let serverName: String?

    init(version: String, cipher: String, serverName: String?) {
        self.version = version
        self.serverName = serverName
        var line = ByteBuffer(capacity: 256)
        Self.combinedField(" tls_version=", version, into: &line)
        Self.combinedField(" tls_cipher=", cipher, into: &line)
        if let serverName, !serverName.isEmpty {
            line.append(" sni=\"")
            let bytes = Array(serverName.utf8)
            bytes.withBytes(0..<bytes.count) { line.appendEscapedForCombined($0) }
            line.append(UInt8(ascii: "\""))
        } else {
            line.append(" sni=-")
        }
        combined = line.array
        var json = ByteBuffer(capacity: 256)
        Self.jsonField(",\"tls_version\":", version, into: &json)
        Self.jsonField(",\"tls_cipher\":", cipher, into: &json)
        Self.jsonField(",\"sni\":", serverName, into: &json)
        self.json = json.array
    }

    private static func combinedField(_ key: StaticString, _ value: String?, into line: inout ByteBuffer) {
        line.append(key)
        guard let value, !value.isEmpty else { return line.append(UInt8(ascii: "-")) }
        let bytes = Array(value.utf8)
        bytes.withBytes(0..<bytes.count) { line.appendEscapedForCombined($0) }
    }

    private static func jsonField(_ key: StaticString, _ value: String?, into json: inout ByteBuffer) {
        json.append(key)
        guard let value, !value.isEmpty else { return json.append("null") }
        let bytes = Array(value.utf8)
        json.append(UInt8(ascii: "\""))
        bytes.withBytes(0..<bytes.count) { json.appendEscapedForJSON($0) }
        json.append(UInt8(ascii: "\""))
    }

    convenience init(_ stream: TLSStream) {
        self.init(version: stream.version, cipher: stream.cipher, serverName: stream.serverName)
    }

    /// What a cleartext connection's lines say in their place.
    static let cleartextCombined = Array(" tls_version=- tls_cipher=- sni=-".utf8)
    static let cleartextJSON = Array(",\"tls_version\":null,\"tls_cipher\":null,\"sni\":null".utf8)
}
