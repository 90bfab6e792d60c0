/// Appending protocol text to output byte buffers without going through `String`.
extension Array where Element == UInt8 {
    @inlinable
    public mutating func append(_ literal: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Appends `value` in decimal.
    @inlinable
    public mutating func appendDecimal<T: BinaryInteger>(_ value: T) {
        var v = UInt64(value)
        if v == 0 { append(UInt8(ascii: "0")); return }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, no allocation
        var n = 0
        Swift.withUnsafeMutableBytes(of: &digits) { scratch in
            while v > 0 {
                scratch[n] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                n += 1
            }
            while n > 0 {
                n -= 1
                append(scratch[n])
            }
        }
    }

    /// Appends `value` in lower-case hexadecimal (chunk sizes).
    @inlinable
    public mutating func appendHex(_ value: Int) {
        let v = UInt64(value)
        if v == 0 { append(UInt8(ascii: "0")); return }
        var shift = 60
        while shift > 0 && (v >> UInt64(shift)) & 0xF == 0 { shift -= 4 }
        while shift >= 0 {
            let d = UInt8((v >> UInt64(shift)) & 0xF)
            append(d < 10 ? UInt8(ascii: "0") + d : UInt8(ascii: "a") + d - 10)
            shift -= 4
        }
    }

    /// Appends `source[range]` with one `memcpy` (the generic `append(contentsOf:)` on a slice
    /// measured as the largest single item in the proxy's user-space profile).
    @inlinable
    public mutating func append(_ source: [UInt8], _ range: Range<Int>) {
        source.withUnsafeBufferPointer { src in
            append(contentsOf: UnsafeBufferPointer(rebasing: src[range]))
        }
    }

    /// Appends bytes copied from a raw buffer.
    @inlinable
    public mutating func append(raw: UnsafeRawBufferPointer) {
        append(contentsOf: UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), count: raw.count))
    }
}
