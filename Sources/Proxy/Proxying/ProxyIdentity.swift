/// The release: `proxy --version` prints it (with the libraries linked). The minor number follows
/// the issue the release completes.
public enum ProxyVersion {
    public static let current = "0.17.0"
}

/// What this proxy process calls itself in `Via` (RFC 9110 §7.6.3), so that it can recognise a
/// request it forwarded coming back to it: a backend that points at the proxy's own listener
/// (`--to /api=http://localhost:8080` with `--listen :8080` and no API running) would otherwise
/// forward to itself until a head grew too large.
///
/// A random pseudonym, drawn once per process (every worker and every reload share it): two
/// instances chained on purpose never mistake each other's requests for their own.
/// Threading: immutable after first use; safe from any thread.
enum ProxyIdentity {
    /// `swift-proxy-` and 8 random hex digits.
    static let viaName: [UInt8] = {
        var name = Array("swift-proxy-".utf8)
        var random = UInt32.random(in: .min ... .max)
        for _ in 0..<8 {
            name.append(ByteBuffer.hexDigit(UInt8(random & 0xF), letters: 87))
            random >>= 4
        }
        return name
    }()

    /// Whether any `Via` field of `head` names this process (checked only when the parser saw one).
    static func requestHasLooped(_ head: RequestHead) -> Bool {
        let b = head.bytes
        let name = viaName
        for field in head.fields where field.name.count == 3 && b.equalsIgnoringCase(field.name, "via") {
            let value = field.value
            guard value.count >= name.count else { continue }
            var i = value.lowerBound
            while i + name.count <= value.upperBound {
                if b[i] == name[0] && b[i..<(i + name.count)].elementsEqual(name) { return true }
                i += 1
            }
        }
        return false
    }
}
