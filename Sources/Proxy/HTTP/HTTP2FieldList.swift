/// Header fields for an HTTP/2 HEADERS frame: the bytes of every name and value in one buffer,
/// and each field as a pair of ranges into it. Names are written lowercase (RFC 9113 §8.2.1).
/// The codec reads it once when it submits the frame; a stream reuses one list (and its capacity)
/// for every head it sends.
///
/// `neverIndexed` fields are sent as HPACK literals the peer must not add to its table either
/// (RFC 7541 §6.2.3): values that never repeat (`x-request-id`) would otherwise push every
/// reusable entry out of both tables, and `set-cookie` values are secrets.
///
/// Threading: a value, loop thread only.
public struct HTTP2FieldList {
    public private(set) var bytes: [UInt8] = []
    public private(set) var fields: [(name: Range<Int>, value: Range<Int>, neverIndexed: Bool)] = []

    public init() {}

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
    }

    /// A field whose name (lowercased here) and value are ranges of other buffers.
    public mutating func append(lowercasedName source: [UInt8], _ name: Range<Int>, value valueSource: [UInt8], _ value: Range<Int>,
                                neverIndexed: Bool = false) {
        let start = bytes.count
        bytes.append(source, name)
        let nameEnd = bytes.count
        bytes.withUnsafeMutableBufferPointer { b in
            for i in start..<nameEnd where b[i] &- 65 < 26 { b[i] |= 0x20 }
        }
        bytes.append(valueSource, value)
        fields.append((start..<nameEnd, nameEnd..<bytes.count, neverIndexed))
    }

    /// A field with a lowercase literal name.
    public mutating func append(name: StaticString, value: [UInt8], neverIndexed: Bool = false) {
        let start = bytes.count
        bytes.append(name)
        let nameEnd = bytes.count
        bytes.append(value, 0..<value.count)
        fields.append((start..<nameEnd, nameEnd..<bytes.count, neverIndexed))
    }

    public mutating func append(name: StaticString, value: String) {
        append(name: name, value: Array(value.utf8))
    }
}
