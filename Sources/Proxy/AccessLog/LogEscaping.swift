/// The escaping and number forms of access log lines.
extension ByteBuffer {
    /// Microseconds as seconds with six decimals (`0.001034`).
    mutating func appendSeconds(micros: UInt64) {
        appendDecimal(micros / 1_000_000)
        let p = reserve(7)
        p[0] = UInt8(ascii: ".")
        var fraction = micros % 1_000_000
        var i = 6
        while i > 0 {
            p[i] = UInt8(ascii: "0") + UInt8(fraction % 10)
            fraction /= 10
            i -= 1
        }
        commit(7)
    }

    /// nginx's log escaping: bytes outside printable ASCII, `"` and `\` as `\xHH` (upper case).
    mutating func appendEscapedForCombined(_ source: UnsafeBufferPointer<UInt8>) {
        let start = reserve(source.count * 4)
        var p = start
        for c in source {
            // One unsigned compare for "outside 0x20...0x7E".
            if c &- 0x20 > 0x5E || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
                p[0] = UInt8(ascii: "\\")
                p[1] = UInt8(ascii: "x")
                p[2] = Self.hexDigit(c >> 4, letters: 55)
                p[3] = Self.hexDigit(c & 0xF, letters: 55)
                p += 4
            } else {
                p.pointee = c
                p += 1
            }
        }
        commit(p - start)
    }

    /// A JSON string body: `"` and `\` escaped, other bytes outside printable ASCII as `\u00hh`
    /// (the byte read as Latin-1), so the line is valid JSON whatever the bytes were.
    mutating func appendEscapedForJSON(_ source: UnsafeBufferPointer<UInt8>) {
        let start = reserve(source.count * 6)
        var p = start
        for c in source {
            if c &- 0x20 <= 0x5E && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
                p.pointee = c
                p += 1
            } else if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
                p[0] = UInt8(ascii: "\\")
                p[1] = c
                p += 2
            } else {
                p[0] = UInt8(ascii: "\\")
                p[1] = UInt8(ascii: "u")
                p[2] = UInt8(ascii: "0")
                p[3] = UInt8(ascii: "0")
                p[4] = Self.hexDigit(c >> 4, letters: 87)
                p[5] = Self.hexDigit(c & 0xF, letters: 87)
                p += 6
            }
        }
        commit(p - start)
    }
}

extension Array where Element == UInt8 {
    /// `self[range]` as a buffer, for the escaping above.
    @inline(__always)
    func withBytes<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[range])) }
    }
}
