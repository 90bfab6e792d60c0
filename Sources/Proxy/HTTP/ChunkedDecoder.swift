/// Incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1).
///
/// A byte-driven state machine, so input may be split anywhere (down to one byte per call). Body
/// data is handed out as slices of the caller's buffer, never copied. Everything that is not data
/// (chunk sizes, extensions, trailers) is validated strictly and dropped: the proxy re-frames the
/// body itself, and a lenient chunk parser is the classic request-smuggling hole.
///
/// Strictness, all answered with 400:
/// - chunk-size is 1–15 hex digits (no sign, `0x`, or leading whitespace); 15 digits keep the size
///   below 2⁶⁰, so it can never overflow.
/// - every line in the framing ends in CRLF; a bare LF is never accepted here (DESIGN.md §4).
/// - chunk extensions follow `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`,
///   and a chunk line is at most `maxChunkLineBytes` long.
/// - chunk data is followed by exactly CRLF.
/// - trailer fields follow the header field rules (token name, `:`, value bytes, no obs-fold), and the
///   whole trailer section is at most `maxTrailerBytes`.
public struct ChunkedDecoder {
    enum State: UInt8 {
        /// Expecting the first hex digit of a chunk size.
        case sizeStart
        /// Inside the hex digits.
        case size
        /// Whitespace after the size or an extension: only `;` may follow (BWS before `;`).
        case whitespaceBeforeSemicolon
        /// After `;`: optional whitespace, then an extension name.
        case extensionStart
        case extensionName
        /// Whitespace after an extension name: `=` or `;` may follow.
        case whitespaceAfterName
        /// After `=`: optional whitespace, then a token or a quoted string.
        case extensionValueStart
        case extensionToken
        case quotedString
        case quotedPair
        /// Right after a closing quote.
        case afterQuotedString
        /// CR of the chunk line seen; LF must follow.
        case sizeLF
        case data
        /// Chunk data done; CR must follow.
        case dataCR
        case dataLF
        /// Start of a trailer line (or the final empty line).
        case trailerLineStart
        case trailerName
        case trailerValue
        case trailerLF
        /// CR of the final empty line seen.
        case finalLF
        case done
    }

    public let maxChunkLineBytes: Int
    public let maxTrailerBytes: Int
    /// The last chunk, trailers and the final CRLF have been consumed.
    public private(set) var isComplete: Bool

    private var state: State
    /// The size being read (while in the chunk line), then the data bytes still to come.
    private var remaining: Int
    private var sizeDigits: Int
    /// Bytes of the current chunk line, or of the trailer section, read so far.
    private var lineBytes: Int

    public init(maxChunkLineBytes: Int = 4096, maxTrailerBytes: Int = 16 * 1024) {
        self.maxChunkLineBytes = maxChunkLineBytes
        self.maxTrailerBytes = maxTrailerBytes
        self.isComplete = false
        self.state = .sizeStart
        self.remaining = 0
        self.sizeDigits = 0
        self.lineBytes = 0
    }

    /// Prepares for the next chunked body.
    public mutating func reset() {
        isComplete = false
        state = .sizeStart
        remaining = 0
        sizeDigits = 0
        lineBytes = 0
    }

    /// Decodes as much of `input` as possible, handing each run of body data to `onData` (a slice of
    /// `input`, no copy). Returns the number of bytes consumed; when the message ends (last-chunk,
    /// trailers and the final CRLF) `isComplete` becomes true and the bytes after it are not consumed.
    /// After an error the decoder must be `reset()` before reuse.
    public mutating func decode(
        _ input: UnsafeRawBufferPointer,
        onData: (UnsafeRawBufferPointer) throws(HTTPParseError) -> Void
    ) throws(HTTPParseError) -> Int {
        guard state != .done, let base = input.baseAddress else { return 0 }
        return try httpByteClass.withUnsafeBufferPointer { (table) throws(HTTPParseError) -> Int in
            try run(input, base.assumingMemoryBound(to: UInt8.self), table.baseAddress!, onData)
        }
    }

    /// The state machine behind `decode`, with the input and the byte-class table as raw pointers.
    private mutating func run(
        _ input: UnsafeRawBufferPointer, _ p: UnsafePointer<UInt8>, _ table: UnsafePointer<UInt8>,
        _ onData: (UnsafeRawBufferPointer) throws(HTTPParseError) -> Void
    ) throws(HTTPParseError) -> Int {
        let end = input.count
        var i = 0

        // Hot fields live in locals for the loop and are written back on every exit path.
        var state = self.state
        var remaining = self.remaining
        var lineBytes = self.lineBytes
        defer {
            self.state = state
            self.remaining = remaining
            self.lineBytes = lineBytes
        }

        while i < end {
            if state == .data {
                // The bulk path: hand out as much of this chunk as the input holds.
                let n = min(remaining, end - i)
                try onData(UnsafeRawBufferPointer(rebasing: input[i..<(i + n)]))
                i += n
                remaining -= n
                if remaining == 0 { state = .dataCR }
                continue
            }

            let b = p[i]
            let cls = table[Int(b)]
            i += 1

            switch state {
            // Chunk line: size, extensions, CRLF.
            case .sizeStart:
                guard cls & HTTPByteClass.hexDigit != 0 else { throw Self.error("invalid chunk size") }
                remaining = hexValue(b)
                sizeDigits = 1
                lineBytes = 1
                state = .size
            case .size:
                try countLineByte(&lineBytes)
                if cls & HTTPByteClass.hexDigit != 0 {
                    guard sizeDigits < 15 else { throw Self.error("invalid chunk size") }
                    remaining = remaining << 4 | hexValue(b)
                    sizeDigits += 1
                } else if b == UInt8(ascii: "\r") {
                    state = .sizeLF
                } else if b == UInt8(ascii: ";") {
                    state = .extensionStart
                } else if cls & HTTPByteClass.whitespace != 0 {
                    state = .whitespaceBeforeSemicolon
                } else {
                    throw Self.error("invalid chunk size")
                }
            case .whitespaceBeforeSemicolon:
                try countLineByte(&lineBytes)
                if b == UInt8(ascii: ";") { state = .extensionStart }
                else if cls & HTTPByteClass.whitespace == 0 { throw Self.error("invalid chunk extension") }
            case .extensionStart:
                try countLineByte(&lineBytes)
                if cls & HTTPByteClass.tchar != 0 { state = .extensionName }
                else if cls & HTTPByteClass.whitespace == 0 { throw Self.error("invalid chunk extension") }
            case .extensionName:
                try countLineByte(&lineBytes)
                if cls & HTTPByteClass.tchar != 0 { break }
                switch b {
                case UInt8(ascii: "\r"): state = .sizeLF
                case UInt8(ascii: ";"): state = .extensionStart
                case UInt8(ascii: "="): state = .extensionValueStart
                case UInt8(ascii: " "), UInt8(ascii: "\t"): state = .whitespaceAfterName
                default: throw Self.error("invalid chunk extension")
                }
            case .whitespaceAfterName:
                try countLineByte(&lineBytes)
                switch b {
                case UInt8(ascii: " "), UInt8(ascii: "\t"): break
                case UInt8(ascii: ";"): state = .extensionStart
                case UInt8(ascii: "="): state = .extensionValueStart
                default: throw Self.error("invalid chunk extension")
                }
            case .extensionValueStart:
                try countLineByte(&lineBytes)
                if cls & HTTPByteClass.tchar != 0 { state = .extensionToken }
                else if b == UInt8(ascii: "\"") { state = .quotedString }
                else if cls & HTTPByteClass.whitespace == 0 { throw Self.error("invalid chunk extension") }
            case .extensionToken:
                try countLineByte(&lineBytes)
                if cls & HTTPByteClass.tchar != 0 { break }
                switch b {
                case UInt8(ascii: "\r"): state = .sizeLF
                case UInt8(ascii: ";"): state = .extensionStart
                case UInt8(ascii: " "), UInt8(ascii: "\t"): state = .whitespaceBeforeSemicolon
                default: throw Self.error("invalid chunk extension")
                }
            case .quotedString:
                try countLineByte(&lineBytes)
                if b == UInt8(ascii: "\"") { state = .afterQuotedString }
                else if b == UInt8(ascii: "\\") { state = .quotedPair }
                else if cls & HTTPByteClass.qdtext == 0 { throw Self.error("invalid chunk extension") }
            case .quotedPair:
                try countLineByte(&lineBytes)
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ): exactly the field-value class.
                guard cls & HTTPByteClass.fieldValue != 0 else { throw Self.error("invalid chunk extension") }
                state = .quotedString
            case .afterQuotedString:
                try countLineByte(&lineBytes)
                switch b {
                case UInt8(ascii: "\r"): state = .sizeLF
                case UInt8(ascii: ";"): state = .extensionStart
                case UInt8(ascii: " "), UInt8(ascii: "\t"): state = .whitespaceBeforeSemicolon
                default: throw Self.error("invalid chunk extension")
                }
            case .sizeLF:
                guard b == UInt8(ascii: "\n") else { throw Self.error("bare CR in chunk line") }
                if remaining == 0 {
                    state = .trailerLineStart
                    lineBytes = 0
                } else {
                    state = .data
                }

            // After chunk data.
            case .dataCR:
                guard b == UInt8(ascii: "\r") else { throw Self.error("missing CRLF after chunk data") }
                state = .dataLF
            case .dataLF:
                guard b == UInt8(ascii: "\n") else { throw Self.error("missing CRLF after chunk data") }
                state = .sizeStart

            // Trailer section: field lines, then an empty line. `lineBytes` counts the whole section.
            case .trailerLineStart:
                try countTrailerByte(&lineBytes)
                if b == UInt8(ascii: "\r") { state = .finalLF }
                else if cls & HTTPByteClass.tchar != 0 { state = .trailerName }
                else { throw Self.error("invalid trailer field") }
            case .trailerName:
                try countTrailerByte(&lineBytes)
                if b == UInt8(ascii: ":") { state = .trailerValue }
                else if cls & HTTPByteClass.tchar == 0 { throw Self.error("invalid trailer field") }
            case .trailerValue:
                try countTrailerByte(&lineBytes)
                if b == UInt8(ascii: "\r") { state = .trailerLF }
                else if cls & HTTPByteClass.fieldValue == 0 { throw Self.error("invalid trailer field") }
            case .trailerLF:
                try countTrailerByte(&lineBytes)
                guard b == UInt8(ascii: "\n") else { throw Self.error("bare CR in trailer") }
                state = .trailerLineStart
            case .finalLF:
                guard b == UInt8(ascii: "\n") else { throw Self.error("bare CR in trailer") }
                state = .done
                isComplete = true
                return i

            case .data, .done:
                preconditionFailure("unreachable chunked decoder state")
            }
        }
        return i
    }

    // MARK: - Private

    @inline(__always)
    private func hexValue(_ b: UInt8) -> Int {
        // Digits map to 0–9; letters of either case to 10–15 (`| 0x20` lower-cases them).
        b <= 0x39 ? Int(b &- 0x30) : Int((b | 0x20) &- 0x57)
    }

    @inline(__always)
    private func countLineByte(_ count: inout Int) throws(HTTPParseError) {
        count += 1
        if count > maxChunkLineBytes { throw Self.error("chunk line too long") }
    }

    @inline(__always)
    private func countTrailerByte(_ count: inout Int) throws(HTTPParseError) {
        count += 1
        if count > maxTrailerBytes { throw Self.error("trailer section too large") }
    }

    private static func error(_ detail: String) -> HTTPParseError {
        HTTPParseError(status: 400, reason: "Bad Request: " + detail)
    }
}
