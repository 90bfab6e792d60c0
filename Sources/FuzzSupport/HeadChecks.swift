import Proxy

// Checks on a head the parser accepted, written independently of the parser (no shared byte
// tables): whatever is accepted must be safe to re-serialise, and its framing must be what the
// framing headers say (RFC 9112 §6).

/// tchar (RFC 9110 §5.6.2).
func isTchar(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
        return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
         UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
         UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

func lower(_ b: UInt8) -> UInt8 { (b >= 65 && b <= 90) ? b | 0x20 : b }

func equalsIgnoringCase(_ bytes: ArraySlice<UInt8>, _ literal: StaticString) -> Bool {
    guard bytes.count == literal.utf8CodeUnitCount else { return false }
    return literal.withUTF8Buffer { l in zip(bytes, l).allSatisfy { lower($0) == lower($1) } }
}

/// Comma-separated list elements with OWS trimmed, empty ones included.
func listElements(_ value: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
    value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map { element in
        var e = element
        while let f = e.first, f == 0x20 || f == 0x09 { e = e.dropFirst() }
        while let l = e.last, l == 0x20 || l == 0x09 { e = e.dropLast() }
        return e
    }
}

/// What the framing headers of a head say.
struct FramingHeaders {
    var transferEncodings: [ArraySlice<UInt8>] = []
    var hasTransferEncoding = false
    var contentLengths: [ArraySlice<UInt8>] = []

    init(_ bytes: [UInt8], _ fields: [HeaderField]) {
        for f in fields {
            let name = bytes[f.name], value = bytes[f.value]
            if equalsIgnoringCase(name, "transfer-encoding") {
                hasTransferEncoding = true
                transferEncodings += listElements(value)
            } else if equalsIgnoringCase(name, "content-length") {
                contentLengths += listElements(value)
            }
        }
    }

    /// Transfer-Encoding is exactly one `chunked`, nothing else.
    var isExactlyChunked: Bool {
        transferEncodings.count == 1 && equalsIgnoringCase(transferEncodings[0], "chunked")
    }

    /// The length every Content-Length element agrees on, or nil when absent or not that simple.
    var agreedLength: UInt64? {
        guard !contentLengths.isEmpty else { return nil }
        var result: UInt64?
        for e in contentLengths {
            guard !e.isEmpty, e.count <= 19, e.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            let n = e.reduce(UInt64(0)) { $0 * 10 + UInt64($1 - 0x30) }
            guard n <= UInt64(Int64.max), result == nil || result == n else { return nil }
            result = n
        }
        return result
    }
}

/// Field names and values of an accepted head: in bounds, in order, no byte that could split or
/// smuggle a header when the proxy writes it out again.
func checkFields(_ input: FuzzInput, _ bytes: [UInt8], _ fields: [HeaderField], after start: Int, what: String) {
    var previousEnd = start
    for (k, f) in fields.enumerated() {
        input.check(f.name.lowerBound >= previousEnd && f.name.upperBound < bytes.count
                    && f.value.lowerBound > f.name.upperBound && f.value.upperBound <= bytes.count,
                    "\(what): field \(k) ranges \(f.name) / \(f.value) out of order or out of bounds (\(bytes.count) bytes)")
        let name = bytes[f.name], value = bytes[f.value]
        input.check(!name.isEmpty && name.allSatisfy(isTchar), "\(what): field \(k) name \"\(escape(name))\" is not a token")
        input.check(bytes[f.name.upperBound] == UInt8(ascii: ":"), "\(what): field \(k) name not followed by ':'")
        input.check(value.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) },
                    "\(what): field \(k) value \"\(escape(value))\" holds a control byte")
        if let first = value.first, let last = value.last {
            input.check(first != 0x20 && first != 0x09 && last != 0x20 && last != 0x09,
                        "\(what): field \(k) value \"\(escape(value))\" not trimmed")
        }
        // Only whitespace between the colon and the value.
        input.check(bytes[(f.name.upperBound + 1)..<f.value.lowerBound].allSatisfy { $0 == 0x20 || $0 == 0x09 },
                    "\(what): field \(k) value does not start after the colon's whitespace")
        previousEnd = f.value.upperBound
    }
}

/// Everything a request head that parsed must satisfy.
func checkAcceptedRequest(_ input: FuzzInput, _ head: RequestHead, limits: HeadLimits) {
    let bytes = head.bytes
    let what = "accepted request"
    input.check(head.method.lowerBound >= 0 && !head.method.isEmpty && head.method.upperBound < bytes.count
                && bytes[head.method].allSatisfy(isTchar) && bytes[head.method.upperBound] == 0x20,
                "\(what): bad method range \(head.method)")
    input.check(head.target.lowerBound == head.method.upperBound + 1 && !head.target.isEmpty
                && head.target.upperBound < bytes.count && head.target.count <= limits.maxTargetBytes
                && bytes[head.target].allSatisfy { $0 >= 0x21 && $0 <= 0x7E },
                "\(what): bad target \"\(escape(bytes[min(head.target.lowerBound, bytes.count)..<min(head.target.upperBound, bytes.count)]))\"")
    input.check(head.versionMinor <= 1, "\(what): version minor \(head.versionMinor)")
    input.check(bytes.last == 0x0A, "\(what): head does not end with LF")
    input.check(head.fields.count <= limits.maxHeaderCount, "\(what): \(head.fields.count) fields, limit \(limits.maxHeaderCount)")
    checkFields(input, bytes, head.fields, after: head.target.upperBound, what: what)

    let hosts = head.fields.indices.filter { equalsIgnoringCase(bytes[head.fields[$0].name], "host") }
    input.check(hosts.count <= 1, "\(what): \(hosts.count) Host fields")
    input.check(head.hostField == hosts.first, "\(what): hostField \(String(describing: head.hostField)), Host fields at \(hosts)")
    if head.versionMinor == 1 { input.check(hosts.count == 1, "\(what): HTTP/1.1 without Host") }
    if head.expectsContinue {
        input.check(head.versionMinor == 1 && head.fields.contains {
            equalsIgnoringCase(bytes[$0.name], "expect") && equalsIgnoringCase(bytes[$0.value], "100-continue")
        }, "\(what): expectsContinue without Expect: 100-continue")
    }

    let framing = FramingHeaders(bytes, head.fields)
    if framing.hasTransferEncoding {
        input.check(head.framing == .chunked && framing.isExactlyChunked && framing.contentLengths.isEmpty
                    && head.versionMinor == 1,
                    "\(what): Transfer-Encoding present but framing \(head.framing) (codings \(framing.transferEncodings.map { escape($0) }), \(framing.contentLengths.count) Content-Length elements)")
    } else if !framing.contentLengths.isEmpty {
        guard let n = framing.agreedLength else {
            input.fail("\(what): Content-Length elements \(framing.contentLengths.map { escape($0) }) accepted")
        }
        input.check(head.framing == (n > 0 ? .contentLength(n) : .none), "\(what): Content-Length \(n) but framing \(head.framing)")
    } else {
        input.check(head.framing == .none, "\(what): no framing headers but framing \(head.framing)")
    }
}

/// Everything a response head that parsed must satisfy.
func checkAcceptedResponse(_ input: FuzzInput, _ head: ResponseHead, requestWasHEAD: Bool) {
    let bytes = head.bytes
    let what = requestWasHEAD ? "accepted response to HEAD" : "accepted response"
    input.check(head.status >= 100 && head.status <= 999, "\(what): status \(head.status)")
    input.check(head.versionMinor <= 1, "\(what): version minor \(head.versionMinor)")
    input.check(bytes.last == 0x0A, "\(what): head does not end with LF")
    input.check(head.reason.lowerBound >= 12 && head.reason.upperBound <= bytes.count
                && bytes[head.reason].allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) },
                "\(what): bad reason range \(head.reason)")
    checkFields(input, bytes, head.fields, after: head.reason.upperBound, what: what)

    let framing = FramingHeaders(bytes, head.fields)
    let bodiless = requestWasHEAD || head.status < 200 || head.status == 204 || head.status == 304
    if framing.hasTransferEncoding {
        input.check(framing.isExactlyChunked && framing.contentLengths.isEmpty && head.versionMinor == 1,
                    "\(what): Transfer-Encoding \(framing.transferEncodings.map { escape($0) }) with \(framing.contentLengths.count) Content-Length elements accepted")
        input.check(head.framing == (bodiless ? .none : .chunked), "\(what): chunked but framing \(head.framing)")
    } else if !framing.contentLengths.isEmpty {
        guard let n = framing.agreedLength else {
            input.fail("\(what): Content-Length elements \(framing.contentLengths.map { escape($0) }) accepted")
        }
        input.check(head.framing == (bodiless || n == 0 ? .none : .contentLength(n)),
                    "\(what): Content-Length \(n) but framing \(head.framing)")
    } else {
        input.check(head.framing == (bodiless ? .none : .untilClose), "\(what): no framing headers but framing \(head.framing)")
    }
    if head.framing == .untilClose { input.check(!head.keepAlive, "\(what): close-delimited body on a reusable connection") }
}
