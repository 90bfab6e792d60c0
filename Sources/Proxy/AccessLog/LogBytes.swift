import Glibc

/// A growable byte buffer for formatting log lines: raw stores behind one capacity check per
/// piece, so a line costs a few hundred instructions. (`[UInt8].append` pays a uniqueness and
/// capacity check per call, and its generic `append(contentsOf:)` dominated the first profile of
/// the access log: about 5,000 instructions per line.)
///
/// Ownership: the owner calls `deallocate()` once (the struct does not free on its own).
/// Threading: one thread.
struct LogBytes {
    private(set) var base: UnsafeMutablePointer<UInt8>
    private(set) var count = 0
    private var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 256)
        base = .allocate(capacity: self.capacity)
    }

    func deallocate() { base.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// The bytes as an array (one copy), for handing to the writer thread.
    var array: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    mutating func removeAll() { count = 0 }

    /// Room for `n` more bytes.
    @inline(__always) mutating func reserve(_ n: Int) {
        if count + n > capacity { grow(to: count + n) }
    }

    private mutating func grow(to needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        bigger.update(from: base, count: count)
        base.deallocate()
        base = bigger
        capacity = newCapacity
    }

    @inline(__always) mutating func put(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }

    @inline(__always) mutating func put(_ literal: StaticString) {
        put(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    @inline(__always) mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        memcpy(base + count, source, bytes.count)
        count += bytes.count
    }

    mutating func put(_ bytes: [UInt8]) { bytes.withUnsafeBytes { put($0) } }

    mutating func putDecimal(_ value: UInt64) {
        reserve(20)
        if value == 0 { return put(UInt8(ascii: "0")) }
        var digits = 0
        var v = value
        while v > 0 { digits += 1; v /= 10 }
        v = value
        var i = digits
        while i > 0 {
            i -= 1
            base[count + i] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
        }
        count += digits
    }

    /// Microseconds as seconds with six decimals (`0.001034`).
    mutating func putSeconds(micros: UInt64) {
        putDecimal(micros / 1_000_000)
        reserve(7)
        base[count] = UInt8(ascii: ".")
        var fraction = micros % 1_000_000
        var i = 6
        while i > 0 {
            base[count + i] = UInt8(ascii: "0") + UInt8(fraction % 10)
            fraction /= 10
            i -= 1
        }
        count += 7
    }

    /// nginx's log escaping: bytes outside printable ASCII, `"` and `\` as `\xHH` (upper case).
    mutating func putEscapedForCombined(_ source: UnsafeBufferPointer<UInt8>) {
        reserve(source.count * 4)
        var p = base + count
        for c in source {
            if c < 0x20 || c >= 0x7F || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
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
        count = p - base
    }

    /// A JSON string body: `"` and `\` escaped, other bytes outside printable ASCII as `\u00hh`
    /// (the byte read as Latin-1), so the line is valid JSON whatever the bytes were.
    mutating func putEscapedForJSON(_ source: UnsafeBufferPointer<UInt8>) {
        reserve(source.count * 6)
        var p = base + count
        for c in source {
            if c >= 0x20 && c < 0x7F && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
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
        count = p - base
    }

    /// `letters`: 55 for upper-case A–F, 87 for lower case.
    @inline(__always) private static func hexDigit(_ nibble: UInt8, letters: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : letters + nibble
    }
}

extension Array where Element == UInt8 {
    /// `self[range]` as a buffer, for `LogBytes`' escaping.
    @inline(__always)
    func withBytes<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[range])) }
    }
}
