import Glibc

/// A growable byte buffer for what the proxy writes — request and response heads, chunk
/// framing, its own answers, access log lines: raw stores behind one capacity check per piece.
///
/// Why not `[UInt8]`: `Array.append(contentsOf:)` costs about 250 instructions per call whatever
/// the length (measured with callgrind on Swift 6.3: 20 bytes 251, 200 bytes 270), and a proxied
/// request makes a dozen such appends. Here an append is a capacity check and a `memcpy`.
///
/// Non-copyable, so the storage has exactly one owner and is freed with it.
/// Threading: one thread at a time.
public struct ByteBuffer: ~Copyable {
    private var base: UnsafeMutablePointer<UInt8>
    public private(set) var count = 0
    public private(set) var capacity: Int

    public init(capacity: Int = 1024) {
        self.capacity = max(capacity, 64)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    public var isEmpty: Bool { count == 0 }

    /// The bytes written so far, valid until the next change.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// A copy as an array (tests, and handing a log buffer to another thread): one `memcpy`
    /// (`Array(UnsafeBufferPointer)` copies byte by byte: ~1 instruction per byte).
    public var array: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { destination, initialized in
            if count > 0 { memcpy(destination.baseAddress!, base, count) }
            initialized = count
        }
    }

    /// Forgets the contents; keeps the storage unless it grew beyond `retainedCapacity` (then it
    /// shrinks back, so one large response does not pin memory on an idle connection).
    public mutating func removeAll(retainedCapacity: Int = .max) {
        count = 0
        if capacity > retainedCapacity {
            base.deallocate()
            capacity = max(retainedCapacity, 64)
            base = .allocate(capacity: capacity)
        }
    }

    /// Room for `n` more bytes; returns where they go.
    @inline(__always) @discardableResult
    mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if count + n > capacity { grow(to: count + n) }
        return base + count
    }

    /// After writing `n` bytes at `reserve(n)`'s pointer.
    @inline(__always) mutating func commit(_ n: Int) { count += n }

    private mutating func grow(to needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        bigger.update(from: base, count: count)
        base.deallocate()
        base = bigger
        capacity = newCapacity
    }

    @inline(__always) public mutating func append(_ byte: UInt8) {
        reserve(1).pointee = byte
        count += 1
    }

    @inline(__always) public mutating func append(_ literal: StaticString) {
        append(raw: UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    @inline(__always) public mutating func append(raw bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        memcpy(reserve(bytes.count), source, bytes.count)
        count += bytes.count
    }

    public mutating func append(contentsOf bytes: [UInt8]) { bytes.withUnsafeBytes { append(raw: $0) } }

    /// `source[range]`.
    public mutating func append(_ source: [UInt8], _ range: Range<Int>) {
        source.withUnsafeBytes { append(raw: UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    /// One header field line: `name: value` and CRLF.
    public mutating func appendField(_ name: StaticString, _ value: [UInt8]) {
        append(name)
        append(": ")
        append(contentsOf: value)
        append("\r\n")
    }

    public mutating func append(utf8 text: String) {
        var text = text
        text.withUTF8 { append(raw: UnsafeRawBufferPointer($0)) }
    }

    /// `value` in decimal.
    public mutating func appendDecimal<T: BinaryInteger>(_ value: T) {
        let v = UInt64(value)
        var digits = 1
        var rest = v / 10
        while rest > 0 { digits += 1; rest /= 10 }
        let p = reserve(digits)
        rest = v
        var i = digits
        while i > 0 {
            i -= 1
            p[i] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
        }
        count += digits
    }

    /// `value` in lower-case hexadecimal (chunk sizes).
    public mutating func appendHex(_ value: Int) {
        let v = UInt64(value)
        var digits = 1
        while digits < 16 && v >> UInt64(4 * digits) != 0 { digits += 1 }
        let p = reserve(digits)
        for i in 0..<digits {
            p[i] = Self.hexDigit(UInt8((v >> UInt64(4 * (digits - 1 - i))) & 0xF), letters: 87)
        }
        count += digits
    }

    /// One hexadecimal digit; `letters`: 55 for upper-case A–F, 87 for lower case.
    @inline(__always) static func hexDigit(_ nibble: UInt8, letters: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : letters + nibble
    }
}
