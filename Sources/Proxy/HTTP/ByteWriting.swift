/// Appending protocol text to byte arrays (health probes, pipelined input, test traffic). What the
/// proxy writes to sockets goes through `ByteBuffer`, which is faster per append.
extension Array where Element == UInt8 {
    @inlinable
    public mutating func append(_ literal: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
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
