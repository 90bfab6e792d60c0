/// Header fields for an HTTP/2 HEADERS frame: the bytes of every name and value in one buffer,
/// and each field as a pair of ranges into it. Names are written lowercase (RFC 9113 §8.2.1).
/// The codec reads it once when it submits the frame; a stream reuses one list (and its capacity)
/// for every head it sends.
///
/// Threading: a value, loop thread only.
public struct HTTP2FieldList {
    public private(set) var bytes: [UInt8] = []
    public private(set) var fields: [(name: Range<Int>, value: Range<Int>)] = []

    public init() {}

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
    }

    /// A field whose name (lowercased here) and value are ranges of other buffers.
    public mutating func append(lowercasedName source: [UInt8], _ name: Range<Int>, value valueSource: [UInt8], _ value: Range<Int>) {
        let start = bytes.count
        for i in name {
            let c = source[i]
            bytes.append(c >= 65 && c <= 90 ? c | 0x20 : c)
        }
        let nameRange = start..<bytes.count
        bytes.append(contentsOf: valueSource[value])
        fields.append((nameRange, nameRange.upperBound..<bytes.count))
    }

    /// A field with a lowercase literal name.
    public mutating func append(name: StaticString, value: [UInt8]) {
        let start = bytes.count
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        let nameRange = start..<bytes.count
        bytes.append(contentsOf: value)
        fields.append((nameRange, nameRange.upperBound..<bytes.count))
    }

    public mutating func append(name: StaticString, value: String) {
        append(name: name, value: Array(value.utf8))
    }
}
