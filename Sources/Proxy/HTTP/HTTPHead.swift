/// Parsed HTTP/1.x message heads.
///
/// A head keeps the raw bytes it was parsed from and describes every part (method, target,
/// header names and values) as offsets into them, so parsing allocates one array for the bytes
/// (reused across requests by the connection) and one for the field spans — never a `String`
/// per header. Heads are values: a connection owns the one it is working on.

/// A header field as two byte ranges into the head's `bytes`.
public struct HeaderField: Equatable, Sendable {
    /// The field name, exactly as received (case preserved, no surrounding whitespace).
    public var name: Range<Int>
    /// The field value with leading and trailing SP/HT removed.
    public var value: Range<Int>

    @inlinable
    public init(name: Range<Int>, value: Range<Int>) {
        self.name = name
        self.value = value
    }
}

/// How a message body is delimited on the wire.
public enum BodyFraming: Equatable, Sendable {
    /// No body at all (requests without length headers; HEAD/1xx/204/304 responses).
    case none
    /// Exactly this many body bytes follow the head.
    case contentLength(UInt64)
    /// `Transfer-Encoding: chunked`.
    case chunked
    /// Responses only: the body runs until the upstream closes the connection.
    case untilClose
}

/// A rejected message: the status to answer with and a short plain-text reason.
public struct HTTPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// 400, 414, 431 or 501 for requests; responses use 502 at the proxy layer.
    public var status: UInt16
    public var reason: String

    public init(status: UInt16, reason: String) {
        self.status = status
        self.reason = reason
    }

    public var description: String { "\(status) \(reason)" }
}

/// Limits applied while reading a head.
public struct HeadLimits: Equatable, Sendable {
    /// Largest head (start line + fields + blank line) accepted; beyond it: 431.
    public var maxHeadBytes: Int
    /// Longest request target; beyond it: 414.
    public var maxTargetBytes: Int
    /// Most header fields; beyond it: 431.
    public var maxHeaderCount: Int

    public init(maxHeadBytes: Int = 32 * 1024, maxTargetBytes: Int = 8 * 1024, maxHeaderCount: Int = 100) {
        self.maxHeadBytes = maxHeadBytes
        self.maxTargetBytes = maxTargetBytes
        self.maxHeaderCount = maxHeaderCount
    }
}

/// A parsed request head.
public struct RequestHead: Sendable {
    /// The raw head bytes, start line through the terminating blank line. The proxy may append
    /// bytes it derives after them (the normal form of the path, see `PathNormalizer`; the name
    /// of a `Host` field it adds): ranges into those are as valid as the others.
    public var bytes: [UInt8]
    public var method: Range<Int>
    public var target: Range<Int>
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and for HTTP/2, whose requests are read as HTTP/1.1 heads:
    /// `HTTP2RequestHeadBuilder`).
    public var versionMinor: UInt8
    /// The request came over HTTP/2 (the access log says `HTTP/2.0`). Cleared by the parser.
    public var isHTTP2 = false
    public var fields: [HeaderField]
    /// `.none`, `.contentLength` or `.chunked` (never `.untilClose` for a request).
    public var framing: BodyFraming
    /// Whether the client wants the connection kept open after this exchange
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    public var keepAlive: Bool
    /// `Expect: 100-continue` was sent.
    public var expectsContinue: Bool
    /// Index into `fields` of the single `Host` field, if any.
    public var hostField: Int?
    /// `Connection` names `upgrade` (a protocol switch may be asked for; see `HeaderRewriter`).
    public var connectionUpgrade = false
    /// Index into `fields` of the (last) `X-Request-Id` field, if any.
    public var requestIDField: Int?
    /// A `Via` field is present (the proxy looks for its own name there: a forwarding loop).
    public var hasVia = false
    /// A `Content-Length` field is present (even `0`, which `framing` reports as `.none`).
    public var hasContentLengthField = false
    /// A `Connection` field names fields other than `close`, `keep-alive` and `upgrade` (which
    /// are hop-by-hop anyway): only then must the rewriter collect its tokens. True unless the
    /// parser said otherwise.
    public var connectionNamesOthers = true

    public init(bytes: [UInt8] = [], method: Range<Int> = 0..<0, target: Range<Int> = 0..<0,
                versionMinor: UInt8 = 1, fields: [HeaderField] = [], framing: BodyFraming = .none,
                keepAlive: Bool = true, expectsContinue: Bool = false, hostField: Int? = nil) {
        self.bytes = bytes
        self.method = method
        self.target = target
        self.versionMinor = versionMinor
        self.fields = fields
        self.framing = framing
        self.keepAlive = keepAlive
        self.expectsContinue = expectsContinue
        self.hostField = hostField
    }

    /// The method is exactly `HEAD` (methods are case-sensitive).
    @inlinable public var isHEAD: Bool { bytes.equals(method, "HEAD") }
    /// GET, HEAD, OPTIONS, TRACE, PUT and DELETE: safe to retry once when nothing came back.
    @inlinable public var isIdempotent: Bool {
        bytes.equals(method, "GET") || bytes.equals(method, "HEAD") || bytes.equals(method, "OPTIONS")
            || bytes.equals(method, "PUT") || bytes.equals(method, "DELETE") || bytes.equals(method, "TRACE")
    }
}

/// A parsed response head.
public struct ResponseHead: Sendable {
    public var bytes: [UInt8]
    public var status: UInt16
    /// The reason phrase (may be empty).
    public var reason: Range<Int>
    public var versionMinor: UInt8
    public var fields: [HeaderField]
    /// `.none` for HEAD requests and 1xx/204/304 whatever the headers say.
    public var framing: BodyFraming
    /// Whether the upstream allows reuse of the connection after this response.
    public var keepAlive: Bool

    public init(bytes: [UInt8] = [], status: UInt16 = 0, reason: Range<Int> = 0..<0, versionMinor: UInt8 = 1,
                fields: [HeaderField] = [], framing: BodyFraming = .none, keepAlive: Bool = true) {
        self.bytes = bytes
        self.status = status
        self.reason = reason
        self.versionMinor = versionMinor
        self.fields = fields
        self.framing = framing
        self.keepAlive = keepAlive
    }

    /// 1xx informational (100 Continue, 103 Early Hints); 101 is a protocol switch, not interim.
    @inlinable public var isInterim: Bool { status >= 100 && status < 200 && status != 101 }

    /// `Content-Type: text/event-stream` (Server-Sent Events: long silences are normal). Set by
    /// the parser.
    public var isEventStream = false
    /// Index into `fields` of the (last) `Keep-Alive` field, if any. Set by the parser.
    public var keepAliveField: Int?
    /// As `RequestHead.connectionNamesOthers`.
    public var connectionNamesOthers = true
}

// MARK: - Byte helpers shared by the parser and the header rewriter

extension Array where Element == UInt8 {
    /// Whether the bytes in `range` equal `literal` exactly.
    @inlinable
    public func equals(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        return withUnsafeBufferPointer { buf in
            memcmpEqual(buf.baseAddress! + range.lowerBound, literal.utf8Start, range.count)
        }
    }

    /// Whether the bytes in `range` equal `other` exactly.
    @inlinable
    public func equals(_ range: Range<Int>, _ other: [UInt8]) -> Bool {
        range.count == other.count && self[range].elementsEqual(other)
    }

    /// Whether the bytes in `range` equal `literal` ignoring ASCII case. `literal` must be lower case.
    @inlinable
    public func equalsIgnoringCase(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        let lit = literal.utf8Start
        return withUnsafeBufferPointer { buf in
            var i = 0
            let base = buf.baseAddress! + range.lowerBound
            while i < range.count {
                if asciiLower(base[i]) != lit[i] { return false }
                i += 1
            }
            return true
        }
    }

    /// Whether two ranges of these bytes are equal ignoring ASCII case.
    @inlinable
    public func equalsIgnoringCase(_ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var i = 0
        while i < a.count {
            if asciiLower(self[a.lowerBound + i]) != asciiLower(self[b.lowerBound + i]) { return false }
            i += 1
        }
        return true
    }

    /// The bytes in `range` as a `String` (for logs, admin output and tests — not the hot path).
    public func string(_ range: Range<Int>) -> String {
        String(decoding: self[range], as: UTF8.self)
    }
}

@inlinable @inline(__always)
public func asciiLower(_ b: UInt8) -> UInt8 {
    (b &- 65) < 26 ? b | 0x20 : b
}

/// Copies `count` bytes from `source` to `destination`, ASCII upper case made lower case, eight
/// bytes at a time (field names for HTTP/2, which must be lowercase). Bytes of 0x80 and above
/// are copied unchanged.
func copyLowercasingASCII(_ source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, count: Int) {
    let ones: UInt64 = 0x0101_0101_0101_0101
    var i = 0
    while i + 8 <= count {
        let w = source.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        let low7 = w & (0x7f &* ones)
        // High bit of each byte: set where the byte (without its own high bit) is >= "A", and
        // where it is > "Z"; no carry crosses a byte (0x7f + 0x3f < 0x100).
        let atLeastA = low7 &+ (0x3f &* ones)
        let aboveZ = low7 &+ (0x25 &* ones)
        let upper = atLeastA & ~aboveZ & ~w & (0x80 &* ones)
        destination.storeBytes(of: w | (upper >> 2), toByteOffset: i, as: UInt64.self)
        i += 8
    }
    while i < count {
        destination.storeBytes(of: asciiLower(source.load(fromByteOffset: i, as: UInt8.self)), toByteOffset: i, as: UInt8.self)
        i += 1
    }
}

@inlinable @inline(__always)
func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    while i < n {
        if a[i] != b[i] { return false }
        i += 1
    }
    return true
}

extension RequestHead {
    /// Index of the first field named `name` (lower-case literal), if any.
    @inlinable
    public func fieldIndex(_ name: StaticString) -> Int? {
        for i in fields.indices where bytes.equalsIgnoringCase(fields[i].name, name) { return i }
        return nil
    }

    /// Value of the first field named `name`, as a `String` (tests and admin use).
    public func value(of name: StaticString) -> String? {
        fieldIndex(name).map { bytes.string(fields[$0].value) }
    }

    public var methodString: String { bytes.string(method) }
    public var targetString: String { bytes.string(target) }
}

extension ResponseHead {
    @inlinable
    public func fieldIndex(_ name: StaticString) -> Int? {
        for i in fields.indices where bytes.equalsIgnoringCase(fields[i].name, name) { return i }
        return nil
    }

    public func value(of name: StaticString) -> String? {
        fieldIndex(name).map { bytes.string(fields[$0].value) }
    }
}
