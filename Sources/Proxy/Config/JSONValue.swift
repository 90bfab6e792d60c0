/// A strict JSON (RFC 8259) reader for the config file.
///
/// The library avoids Foundation, and the config needs things `JSONSerialization`/`Codable` do not
/// give: errors with line and column, rejection of duplicate keys (which decoders silently resolve
/// to one of the values), key order for messages, and numbers kept as written so "5000" and "5000.5"
/// can be told apart without a round trip through `Double`.

/// A parsed JSON document.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number's literal text exactly as written (already checked against the JSON grammar).
    /// Kept as text so integers of any size stay exact and "1" and "1.0" remain distinguishable;
    /// use `integerValue` / `doubleValue` to read it.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order. Keys are unique: the parser rejects duplicates.
    case object([(String, JSONValue)])

    /// Deepest nesting of arrays and objects accepted, so a hostile or broken file cannot exhaust
    /// the stack of the recursive parser.
    public static let maxDepth = 64

    /// Parses one JSON document (an optional UTF-8 byte order mark is skipped, as RFC 8259 §8.1
    /// allows, since some editors write one).
    public static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        return try parser.parseDocument()
    }

    /// Structural equality. Tuples are not `Equatable`, so objects are compared member by member,
    /// in order; numbers compare by their literal text.
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case let (.bool(a), .bool(b)): a == b
        case let (.number(a), .number(b)): a == b
        case let (.string(a), .string(b)): a == b
        case let (.array(a), .array(b)): a == b
        case let (.object(a), .object(b)):
            a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    /// Whether this is a number written as an integer: no fraction, no exponent (`1e3` and `5.0` are
    /// not), whatever its size.
    public var isIntegerLiteral: Bool {
        guard case .number(let literal) = self else { return false }
        return !literal.contains { $0 == "." || $0 == "e" || $0 == "E" }
    }

    /// The value of an integer literal that fits in `Int`; `nil` for anything else. Counts, ports
    /// and milliseconds use this, so "2.5" is never rounded.
    public var integerValue: Int? {
        guard isIntegerLiteral, case .number(let literal) = self else { return nil }
        return Int(literal)
    }

    /// The number as a `Double` (may be infinite for literals like `1e999`); `nil` for non-numbers.
    public var doubleValue: Double? {
        guard case .number(let literal) = self else { return nil }
        return Double(literal)
    }

    /// The kind of value with its article, for messages like "expected a number, got a string".
    public var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

extension JSONValue: CustomStringConvertible {
    /// JSON's four whitespace bytes only: space, tab, line feed, carriage return (no form feeds,
    /// no non-breaking spaces).
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    /// Compact JSON text (`{"a": [1, true]}`), so error messages can quote values exactly as they
    /// would be written in the file.
    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let literal): return literal
        case .string(let s): return Self.quoted(s)
        case .array(let elements): return "[" + elements.map(\.description).joined(separator: ", ") + "]"
        case .object(let members):
            return "{" + members.map { "\(Self.quoted($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
        }
    }

    /// `s` as a JSON string literal: quotes, backslashes and control characters escaped.
    static func quoted(_ s: String) -> String { JSONText.quote(s) }
}

/// Where and why a document is not valid JSON. Line and column are 1-based; the column counts
/// characters (Unicode scalars), not bytes, so it matches what an editor shows.
public struct JSONSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public var message: String

    public init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    /// `3:14: expected ',' or '}' after object member, found '"'` (callers prefix the file name).
    public var description: String { "\(line):\(column): \(message)" }
}

/// Recursive-descent parser over the raw bytes. Positions are byte offsets until an error needs a
/// line and column, which are computed only then.
private struct JSONParser {
    let bytes: [UInt8]
    var index = 0
    var depth = 0

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func parseDocument() throws(JSONSyntaxError) -> JSONValue {
        if hasByteOrderMark { index = 3 }
        skipWhitespace()
        guard index < bytes.count else { throw error("expected a JSON value, found end of file") }
        let value = try parseValue()
        skipWhitespace()
        guard index == bytes.count else {
            throw error("unexpected \(found()) after the end of the JSON value")
        }
        return value
    }

    // MARK: Values

    private mutating func parseValue() throws(JSONSyntaxError) -> JSONValue {
        guard index < bytes.count else { throw error("expected a value, found end of file") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case UInt8(ascii: "/"): throw error("comments are not allowed in JSON")
        case UInt8(ascii: "'"): throw error("strings must use double quotes (\"), not single quotes")
        case UInt8(ascii: "+"): throw error("numbers cannot start with '+'")
        case UInt8(ascii: "."): throw error("numbers need a digit before the decimal point")
        case let b where Self.isWordByte(b): return try parseLiteral()
        default: throw error("expected a value, found \(found())")
        }
    }

    /// `true`, `false` or `null`. The whole word is read first so `True`, `nul` or `undefined` are
    /// reported as one unknown word rather than a confusing error on the character after it.
    private mutating func parseLiteral() throws(JSONSyntaxError) -> JSONValue {
        let start = index
        while index < bytes.count, Self.isWordByte(bytes[index]) { index += 1 }
        let word = String(decoding: bytes[start..<index], as: UTF8.self)
        switch word {
        case "true": return .bool(true)
        case "false": return .bool(false)
        case "null": return .null
        default:
            throw error(at: start, "unexpected '\(word)'; JSON values are objects, arrays, strings "
                + "in double quotes, numbers, true, false and null")
        }
    }

    private mutating func parseObject() throws(JSONSyntaxError) -> JSONValue {
        try enterContainer()
        index += 1  // "{"
        var members: [(String, JSONValue)] = []
        var keyOffsets: [String: Int] = [:]
        var lastComma: Int?
        skipWhitespace()
        if peek(is: "}") {
            index += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard peek(is: "\"") else {
                if let comma = lastComma, peek(is: "}") {
                    throw error(at: comma, "trailing comma before '}' is not allowed in JSON")
                }
                if index < bytes.count, Self.isWordByte(bytes[index]) || bytes[index] == UInt8(ascii: "'") {
                    throw error("object keys must be strings in double quotes")
                }
                throw error("expected a string key, found \(found())")
            }
            let keyStart = index
            let key = try parseString()
            if let first = keyOffsets[key] {
                let (line, column) = location(of: first)
                throw error(at: keyStart, "duplicate key \(JSONValue.quoted(key)) "
                    + "(first defined at line \(line), column \(column))")
            }
            keyOffsets[key] = keyStart
            skipWhitespace()
            guard peek(is: ":") else { throw error("expected ':' after object key, found \(found())") }
            index += 1
            skipWhitespace()
            members.append((key, try parseValue()))
            skipWhitespace()
            if peek(is: ",") {
                lastComma = index
                index += 1
            } else if peek(is: "}") {
                index += 1
                depth -= 1
                return .object(members)
            } else {
                throw error("expected ',' or '}' after object member, found \(found())")
            }
        }
    }

    private mutating func parseArray() throws(JSONSyntaxError) -> JSONValue {
        try enterContainer()
        index += 1  // "["
        var elements: [JSONValue] = []
        skipWhitespace()
        if peek(is: "]") {
            index += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            if peek(is: "]") {
                // Only reachable after a comma: an empty array returned above.
                throw error(at: lastCommaBefore(index), "trailing comma before ']' is not allowed in JSON")
            }
            elements.append(try parseValue())
            skipWhitespace()
            if peek(is: ",") {
                index += 1
            } else if peek(is: "]") {
                index += 1
                depth -= 1
                return .array(elements)
            } else {
                throw error("expected ',' or ']' after array element, found \(found())")
            }
        }
    }

    private mutating func enterContainer() throws(JSONSyntaxError) {
        depth += 1
        if depth > JSONValue.maxDepth {
            throw error("arrays and objects are nested more than \(JSONValue.maxDepth) levels deep")
        }
    }

    // MARK: Strings

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        let start = index
        index += 1  // opening quote
        var decoded: [UInt8] = []
        var segmentStart = index
        while true {
            guard index < bytes.count else {
                throw error(at: start, "unterminated string (missing closing '\"')")
            }
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                decoded.append(contentsOf: bytes[segmentStart..<index])
                index += 1
                guard let string = String(validating: decoded, as: UTF8.self) else {
                    throw error(at: start, "string is not valid UTF-8")
                }
                return string
            case UInt8(ascii: "\\"):
                decoded.append(contentsOf: bytes[segmentStart..<index])
                try parseEscape(into: &decoded)
                segmentStart = index
            case UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                throw error("line break inside a string (close the string, or write it as \\n)")
            case 0..<0x20:
                throw error("control character \(Self.scalarName(UInt32(byte))) inside a string must be escaped")
            default:
                index += 1
            }
        }
    }

    /// Decodes one escape sequence starting at the backslash and appends its UTF-8 bytes.
    private mutating func parseEscape(into decoded: inout [UInt8]) throws(JSONSyntaxError) {
        let backslash = index
        index += 1
        guard index < bytes.count else { throw error(at: backslash, "unterminated string (missing closing '\"')") }
        let simple: UInt8? = switch bytes[index] {
        case UInt8(ascii: "\""): UInt8(ascii: "\"")
        case UInt8(ascii: "\\"): UInt8(ascii: "\\")
        case UInt8(ascii: "/"): UInt8(ascii: "/")
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "n"): UInt8(ascii: "\n")
        case UInt8(ascii: "r"): UInt8(ascii: "\r")
        case UInt8(ascii: "t"): UInt8(ascii: "\t")
        default: nil
        }
        if let simple {
            decoded.append(simple)
            index += 1
            return
        }
        guard bytes[index] == UInt8(ascii: "u") else {
            throw error(at: backslash, "invalid escape '\\\(Self.printable(bytes[index]))' "
                + "(valid escapes: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")
        }
        index += 1
        var value = try parseHex4(escapeStart: backslash)
        switch value {
        case 0xD800...0xDBFF:
            // A high surrogate must be followed by an escaped low surrogate (RFC 8259 §7).
            let secondStart = index
            guard peek(is: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                throw error(at: backslash, "unpaired surrogate \\u\(Self.hex4(value)) "
                    + "(a high surrogate must be followed by a \\uDC00-\\uDFFF escape)")
            }
            index += 2
            let low = try parseHex4(escapeStart: secondStart)
            guard (0xDC00...0xDFFF).contains(low) else {
                throw error(at: backslash, "unpaired surrogate \\u\(Self.hex4(value)) "
                    + "(a high surrogate must be followed by a \\uDC00-\\uDFFF escape)")
            }
            value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
        case 0xDC00...0xDFFF:
            throw error(at: backslash, "unpaired surrogate \\u\(Self.hex4(value)) "
                + "(a low surrogate must follow a \\uD800-\\uDBFF escape)")
        default:
            break
        }
        // Every value left is a valid scalar: surrogates were combined or rejected above.
        UTF8.encode(Unicode.Scalar(value)!) { decoded.append($0) }
    }

    private mutating func parseHex4(escapeStart: Int) throws(JSONSyntaxError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count, let digit = Self.hexValue(bytes[index]) else {
                throw error(at: escapeStart, "\\u must be followed by four hex digits")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    // MARK: Numbers

    /// Checks the RFC 8259 number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    private mutating func parseNumber() throws(JSONSyntaxError) -> JSONValue {
        let start = index
        if peek(is: "-") { index += 1 }
        if peek(is: "0") {
            index += 1
            if peekDigit() { throw error(at: start, "numbers cannot have leading zeros") }
        } else {
            guard peekDigit() else { throw error("expected a digit after '-', found \(found())") }
            skipDigits()
        }
        if peek(is: ".") {
            index += 1
            guard peekDigit() else { throw error("expected a digit after the decimal point, found \(found())") }
            skipDigits()
        }
        if peek(is: "e") || peek(is: "E") {
            index += 1
            if peek(is: "+") || peek(is: "-") { index += 1 }
            guard peekDigit() else { throw error("expected a digit in the exponent, found \(found())") }
            skipDigits()
        }
        return .number(String(decoding: bytes[start..<index], as: UTF8.self))
    }

    private func peekDigit() -> Bool {
        index < bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index])
    }

    private mutating func skipDigits() {
        while peekDigit() { index += 1 }
    }

    // MARK: Helpers

    private func peek(is ascii: Unicode.Scalar) -> Bool {
        index < bytes.count && bytes[index] == UInt8(ascii: ascii)
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, JSONValue.isWhitespace(bytes[index]) { index += 1 }
    }

    /// The offset of the comma that precedes `offset`, skipping whitespace (for trailing-comma
    /// errors, which are clearer pointing at the comma than at the bracket after it).
    private func lastCommaBefore(_ offset: Int) -> Int {
        var i = offset - 1
        while i > 0, bytes[i] != UInt8(ascii: ",") { i -= 1 }
        return i
    }

    private static func isWordByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"):
            true
        default:
            false
        }
    }

    private static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(b - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    private static func hex4(_ value: UInt32) -> String {
        let hex = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    private static func scalarName(_ value: UInt32) -> String { "U+" + hex4(value) }

    private static func printable(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? String(UnicodeScalar(b)) : scalarName(UInt32(b))
    }

    /// What sits at the current position, for "found …" in messages.
    private func found() -> String {
        guard index < bytes.count else { return "end of file" }
        let b = bytes[index]
        switch b {
        case UInt8(ascii: "\n"), UInt8(ascii: "\r"): return "end of line"
        case 0x21...0x7E: return "'\(String(UnicodeScalar(b)))'"
        case 0x80...:
            // Decode the whole character so the message shows "'é'", not a byte.
            var end = index + 1
            while end < bytes.count, end - index < 4, bytes[end] & 0xC0 == 0x80 { end += 1 }
            if let text = String(validating: bytes[index..<end], as: UTF8.self) { return "'\(text)'" }
            return "byte 0x\(String(b, radix: 16, uppercase: true))"
        default: return Self.scalarName(UInt32(b))
        }
    }

    private var hasByteOrderMark: Bool { bytes.starts(with: [0xEF, 0xBB, 0xBF]) }

    /// 1-based line and column (in Unicode scalars) of a byte offset. A byte order mark is not
    /// counted: editors do not show it.
    private func location(of offset: Int) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        let begin = hasByteOrderMark ? 3 : 0
        for b in bytes[begin..<max(begin, min(offset, bytes.count))] {
            if b == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if b & 0xC0 != 0x80 {  // count lead bytes only: one per scalar
                column += 1
            }
        }
        return (line, column)
    }

    private func error(_ message: String) -> JSONSyntaxError {
        error(at: index, message)
    }

    private func error(at offset: Int, _ message: String) -> JSONSyntaxError {
        let (line, column) = location(of: offset)
        return JSONSyntaxError(line: line, column: column, message: message)
    }
}
