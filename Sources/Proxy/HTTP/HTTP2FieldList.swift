/// Header fields for an HTTP/2 HEADERS frame: the bytes of every name and value in one buffer,
/// and each field as a pair of ranges into it. Names are written lowercase (RFC 9113 §8.2.1).
/// The codec reads it once when it submits the frame (nghttp2 copies what it keeps); a stream
/// reuses one list (and its capacity) for every head it sends.
///
/// `neverIndexed` fields are sent as HPACK literals the peer must not add to its table either
/// (RFC 7541 §6.2.3): values that never repeat (`x-request-id`) would otherwise push every
/// reusable entry out of both tables, and `set-cookie` values are secrets.
///
/// The bytes live in a `ByteBuffer` (an append is a `memcpy`; `[UInt8]` appends of slices were
/// the largest item of an HTTP/2 response head in callgrind). Non-copyable: one owner.
/// Threading: a value, loop thread only.
public struct HTTP2FieldList: ~Copyable {
    public typealias Field = (name: Range<Int>, value: Range<Int>, neverIndexed: Bool)

    private var storage = ByteBuffer(capacity: 256)
    public private(set) var fields: [Field] = []

    public init() {}

    public mutating func removeAll() {
        storage.removeAll(retainedCapacity: 4096)
        fields.removeAll(keepingCapacity: true)
    }

    /// The bytes the ranges of `fields` point into, valid until the next change.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes(body)
    }

    /// A copy of the bytes (tests).
    public var bytes: [UInt8] { storage.array }

    /// A field whose name (lowercased here) and value are ranges of other buffers.
    public mutating func append(lowercasedName source: [UInt8], _ name: Range<Int>, value valueSource: [UInt8], _ value: Range<Int>,
                                neverIndexed: Bool = false) {
        let start = storage.count
        let n = name.count
        let p = storage.reserve(n)
        if n > 0 { source.withUnsafeBytes { s in copyLowercasingASCII(s.baseAddress! + name.lowerBound, to: p, count: n) } }
        storage.commit(n)
        let nameEnd = storage.count
        storage.append(valueSource, value)
        fields.append((start..<nameEnd, nameEnd..<storage.count, neverIndexed))
    }

    /// A field with a lowercase literal name.
    public mutating func append(name: StaticString, value: [UInt8], neverIndexed: Bool = false) {
        let start = storage.count
        storage.append(name)
        let nameEnd = storage.count
        storage.append(contentsOf: value)
        fields.append((start..<nameEnd, nameEnd..<storage.count, neverIndexed))
    }

    public mutating func append(name: StaticString, value: String) {
        let start = storage.count
        storage.append(name)
        let nameEnd = storage.count
        storage.append(utf8: value)
        fields.append((start..<nameEnd, nameEnd..<storage.count, false))
    }
}
