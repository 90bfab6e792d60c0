/// Which of the codings the proxy can produce a request's `Accept-Encoding` fields accept
/// (RFC 9110 §12.5.3): a coding named with `q` > 0, or not named while `*` has `q` > 0. A coding
/// named with `q=0` is refused even if `*` would take it. No field: none (identity only —
/// the RFC lets a server pick any coding then, but browsers always send the field and tools
/// that omit it mostly cannot decode).
///
/// Read from the bytes, no `String`: it runs for every response that could be compressed.
public struct AcceptedCodings: Equatable, Sendable {
    public var brotli = false
    public var gzip = false

    public init(brotli: Bool = false, gzip: Bool = false) {
        self.brotli = brotli
        self.gzip = gzip
    }

    /// Every `Accept-Encoding` field of `head`, combined.
    public init(_ head: RequestHead) {
        // Per coding: 0 not named, 1 named and refused, 2 named and accepted.
        var br: UInt8 = 0, gz: UInt8 = 0, star: UInt8 = 0
        let b = head.bytes
        for field in head.fields where field.name.count == 15 && b.equalsIgnoringCase(field.name, "accept-encoding") {
            Self.scan(b, field.value) { name, accepted in
                let verdict: UInt8 = accepted ? 2 : 1
                if b.equalsIgnoringCase(name, "br") { br = verdict }
                else if b.equalsIgnoringCase(name, "gzip") || b.equalsIgnoringCase(name, "x-gzip") { gz = verdict }
                else if name.count == 1 && b[name.lowerBound] == UInt8(ascii: "*") { star = verdict }
            }
        }
        brotli = br == 2 || (br == 0 && star == 2)
        gzip = gz == 2 || (gz == 0 && star == 2)
    }

    /// Calls `body` with each element's coding name and whether its weight is above zero.
    static func scan(_ b: [UInt8], _ value: Range<Int>, _ body: (Range<Int>, Bool) -> Void) {
        var i = value.lowerBound
        let end = value.upperBound
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
        while i < end {
            while i < end && (isSpace(b[i]) || b[i] == UInt8(ascii: ",")) { i += 1 }
            let nameStart = i
            while i < end && !isSpace(b[i]) && b[i] != UInt8(ascii: ",") && b[i] != UInt8(ascii: ";") { i += 1 }
            let name = nameStart..<i
            var accepted = true
            // Parameters up to the next comma; only `q` matters.
            while i < end && b[i] != UInt8(ascii: ",") {
                guard b[i] == UInt8(ascii: ";") else { i += 1; continue }
                i += 1
                while i < end && isSpace(b[i]) { i += 1 }
                // Whatever follows (another `;`, the `,` ending the element) is looked at again.
                guard i + 1 < end, (b[i] | 0x20) == UInt8(ascii: "q"), b[i + 1] == UInt8(ascii: "=") else { continue }
                i += 2
                accepted = false
                // A qvalue is "0" or "1" with up to three decimals: above zero when any digit is not 0.
                while i < end && (b[i] == UInt8(ascii: ".") || (b[i] >= 0x30 && b[i] <= 0x39)) {
                    if b[i] >= 0x31 && b[i] <= 0x39 { accepted = true }
                    i += 1
                }
            }
            if !name.isEmpty { body(name, accepted) }
        }
    }
}
