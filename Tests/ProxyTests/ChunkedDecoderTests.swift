import Testing
@testable import Proxy

private extension Array where Element == UInt8 {
    /// `withUnsafeBytes` with a typed error: the standard one only rethrows `any Error`.
    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws(HTTPParseError) -> R) throws(HTTPParseError) -> R {
        try withUnsafeBufferPointer { (buf) throws(HTTPParseError) -> R in try body(UnsafeRawBufferPointer(buf)) }
    }
}

// Chunked bodies as wire bytes (RFC 9112 §7.1, DESIGN.md §4).

/// Decodes `raw` fed in pieces of `step` bytes (all at once when nil) until the decoder completes.
/// Returns the body, how many bytes were consumed, and whether the message completed.
private func decode(_ raw: [UInt8], step: Int? = nil, decoder: ChunkedDecoder = ChunkedDecoder())
    throws(HTTPParseError) -> (body: [UInt8], consumed: Int, complete: Bool) {
    var decoder = decoder
    var body: [UInt8] = []
    var offset = 0
    while offset < raw.count && !decoder.isComplete {
        let n = min(step ?? raw.count, raw.count - offset)
        let used = try raw.withRawBytes { (all) throws(HTTPParseError) -> Int in
            try decoder.decode(UnsafeRawBufferPointer(rebasing: all[offset..<(offset + n)])) { data in
                body.append(contentsOf: data)
            }
        }
        offset += used
        if used < n { break }
    }
    return (body, offset, decoder.isComplete)
}

private func decode(_ s: String, step: Int? = nil, decoder: ChunkedDecoder = ChunkedDecoder())
    throws(HTTPParseError) -> (body: [UInt8], consumed: Int, complete: Bool) {
    try decode(Array(s.utf8), step: step, decoder: decoder)
}

/// The error `raw` is rejected with (fed whole and byte by byte, which must agree), or nil.
private func rejection(_ s: String, decoder: ChunkedDecoder = ChunkedDecoder()) -> HTTPParseError? {
    var whole: HTTPParseError?
    var split: HTTPParseError?
    do { _ = try decode(s, decoder: decoder) } catch { whole = error }
    do { _ = try decode(s, step: 1, decoder: decoder) } catch { split = error }
    #expect(whole == split, "whole and byte-by-byte decoding disagree for \(s.debugDescription)")
    return whole
}

struct HTTPChunkedDecoderTests {
    @Test func decodesASingleChunk() throws {
        let raw = "5\r\nhello\r\n0\r\n\r\n"
        let result = try decode(raw)
        #expect(result.body == Array("hello".utf8))
        #expect(result.consumed == raw.utf8.count)
        #expect(result.complete)
    }

    @Test func decodesSeveralChunksWithHexSizesInEitherCase() throws {
        let ten = String(repeating: "x", count: 10)
        let thirtyOne = String(repeating: "y", count: 31)
        let raw = "a\r\n\(ten)\r\nA\r\n\(ten)\r\n1F\r\n\(thirtyOne)\r\n1f\r\n\(thirtyOne)\r\n0\r\n\r\n"
        let result = try decode(raw)
        #expect(result.body == Array((ten + ten + thirtyOne + thirtyOne).utf8))
        #expect(result.complete)
    }

    @Test func decodesAnEmptyBody() throws {
        let result = try decode("0\r\n\r\n")
        #expect(result.body.isEmpty)
        #expect(result.complete)
        #expect(try decode("000\r\n\r\n").complete)
    }

    @Test func stopsAfterTheFinalCRLFLeavingPipelinedBytes() throws {
        let body = "3\r\nabc\r\n0\r\n\r\n"
        let result = try decode(body + "GET / HTTP/1.1\r\n")
        #expect(result.consumed == body.utf8.count)
        #expect(result.body == Array("abc".utf8))
        #expect(result.complete)
    }

    @Test func reportsIncompleteInputWithoutError() throws {
        let result = try decode("5\r\nhel")
        #expect(!result.complete)
        #expect(result.consumed == 6)
        #expect(result.body == Array("hel".utf8))
    }

    @Test func acceptsAndDropsChunkExtensions() throws {
        let raw = "5;name\r\nhello\r\n6;a=b;c=\"quoted \\\" ; string\"\r\n world\r\n"
            + "3 ; x = y ;z\r\n!!!\r\n2;q=\"\"\r\n??\r\n0;last=1\r\n\r\n"
        let result = try decode(raw)
        #expect(result.body == Array("hello world!!!??".utf8))
        #expect(result.complete)
    }

    @Test func acceptsAndDropsTrailerFields() throws {
        let raw = "4\r\ndata\r\n0\r\nX-Checksum: abc123\r\nX-Empty:\r\nX-Spaces:  a b \r\n\r\nNEXT"
        let result = try decode(raw)
        #expect(result.body == Array("data".utf8))
        #expect(result.complete)
        #expect(result.consumed == raw.utf8.count - 4)
    }

    @Test func acceptsObsTextInTrailerValues() throws {
        let raw = Array("0\r\nX: ".utf8) + [0xC3, 0xA9, 0xFF] + Array("\r\n\r\n".utf8)
        #expect(try decode(raw).complete)
    }

    @Test func decodesTheSameAtEverySplitPoint() throws {
        let raw = Array("7;ext=\"v\"\r\nchunk 1\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\nREST".utf8)
        let whole = try decode(raw)
        #expect(whole.body == Array("chunk 10123456789abcdef".utf8))
        #expect(whole.consumed == raw.count - 4)
        for cut in 1..<raw.count {
            let first = try decode(Array(raw[..<cut]))
            #expect(first.consumed == min(cut, whole.consumed))
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            var consumed = 0
            for part in [raw[..<cut], raw[cut...]] where !decoder.isComplete {
                consumed += try Array(part).withRawBytes { (buf) throws(HTTPParseError) in
                    try decoder.decode(buf) { body.append(contentsOf: $0) }
                }
            }
            #expect(body == whole.body, "cut at \(cut)")
            #expect(consumed == whole.consumed, "cut at \(cut)")
            #expect(decoder.isComplete)
        }
    }

    @Test func decodesTheSameFedOneByteAtATime() throws {
        let raw = "7;ext=\"v\"\r\nchunk 1\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\nREST"
        let whole = try decode(raw)
        let bytewise = try decode(raw, step: 1)
        #expect(bytewise.body == whole.body)
        #expect(bytewise.consumed == whole.consumed)
        #expect(bytewise.complete)
    }

    @Test func handsOutSlicesOfTheInputWithoutCopying() throws {
        let raw = Array("5\r\nhello\r\n0\r\n\r\n".utf8)
        var decoder = ChunkedDecoder()
        try raw.withRawBytes { (buf) throws(HTTPParseError) in
            _ = try decoder.decode(buf) { data in
                #expect(data.baseAddress == buf.baseAddress! + 3)
                #expect(data.count == 5)
            }
        }
    }

    @Test func splitsALargeChunkAcrossReads() throws {
        let payload = String(repeating: "z", count: 70_000)
        let raw = "11170\r\n\(payload)\r\n0\r\n\r\n"
        let result = try decode(raw, step: 4096)
        #expect(result.body.count == 70_000)
        #expect(result.complete)
    }

    @Test func acceptsFifteenHexDigits() throws {
        let result = try decode("000000000000005\r\nhello\r\n0\r\n\r\n")
        #expect(result.body == Array("hello".utf8))
    }

    @Test(arguments: [
        "\r\nhello\r\n0\r\n\r\n",            // empty size
        ";ext\r\n",                           // empty size before extension
        "g\r\n",                              // non-hex
        "5g\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",           // leading whitespace
        "\t5\r\nhello\r\n0\r\n\r\n",
        "5 \r\nhello\r\n0\r\n\r\n",           // trailing whitespace without an extension
        "0000000000000005\r\nhello\r\n0\r\n\r\n",  // 16 hex digits
        "ffffffffffffffff\r\n",
        "1 2\r\n",
    ])
    func rejectsInvalidChunkSizes(_ raw: String) {
        let error = rejection(raw)
        #expect(error?.status == 400, "\(raw.debugDescription)")
    }

    @Test func rejectsMissingCRLFAfterChunkData() {
        #expect(rejection("5\r\nhelloX\r\n0\r\n\r\n")?.status == 400)
        #expect(rejection("5\r\nhello0\r\n\r\n")?.status == 400)
        #expect(rejection("5\r\nhello\rX0\r\n\r\n")?.status == 400)
        #expect(rejection("5\r\nhello world\r\n0\r\n\r\n")?.reason == "Bad Request: missing CRLF after chunk data")
    }

    @Test(arguments: [
        "5\nhello\r\n0\r\n\r\n",          // after the size
        "5;a=b\nhello\r\n0\r\n\r\n",      // after an extension
        "5\r\nhello\n0\r\n\r\n",          // after the data
        "0\n\r\n",                        // after the last chunk
        "0\r\n\n",                        // final line
        "0\r\nX: y\n\r\n",                // after a trailer field
        "5\rhello\r\n0\r\n\r\n",          // bare CR
        "0\r\n\r\r\n",
    ])
    func neverAcceptsBareLFOrBareCRInChunkedFraming(_ raw: String) {
        #expect(rejection(raw)?.status == 400, "\(raw.debugDescription)")
    }

    @Test(arguments: [
        "5;\r\nhello\r\n0\r\n\r\n",               // no name
        "5;=x\r\nhello\r\n0\r\n\r\n",
        "5;a=\r\nhello\r\n0\r\n\r\n",             // no value
        "5;a=b c\r\nhello\r\n0\r\n\r\n",          // two tokens
        "5;a b\r\nhello\r\n0\r\n\r\n",
        "5;a=\"open\r\nhello\r\n0\r\n\r\n",       // unterminated quoted string
        "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",       // bytes after the closing quote
        "5;a=b \r\nhello\r\n0\r\n\r\n",           // whitespace before CRLF
        "5;a@b\r\nhello\r\n0\r\n\r\n",            // non-token byte in the name
        "5;a=b@c\r\nhello\r\n0\r\n\r\n",
        "5,a\r\nhello\r\n0\r\n\r\n",
    ])
    func rejectsMalformedChunkExtensions(_ raw: String) {
        #expect(rejection(raw)?.status == 400, "\(raw.debugDescription)")
    }

    @Test func rejectsControlBytesInQuotedExtensions() {
        for bad: UInt8 in [0x00, 0x01, 0x0A, 0x7F] {
            let raw = Array("1;a=\"x".utf8) + [bad] + Array("\"\r\nz\r\n0\r\n\r\n".utf8)
            #expect(throws: HTTPParseError.self) { _ = try decode(raw) }
        }
    }

    @Test func capsTheChunkLineLength() throws {
        let decoder = ChunkedDecoder(maxChunkLineBytes: 64)
        let fits = "5;" + String(repeating: "e", count: 59) + "\r\nhello\r\n0\r\n\r\n"  // 61 bytes + CR
        #expect(try decode(fits, decoder: decoder).complete)
        let long = "5;" + String(repeating: "e", count: 80) + "\r\nhello\r\n0\r\n\r\n"
        let error = rejection(long, decoder: decoder)
        #expect(error?.status == 400)
        #expect(error?.reason == "Bad Request: chunk line too long")
    }

    @Test(arguments: [
        "0\r\nX : y\r\n\r\n",          // whitespace before the colon
        "0\r\n X: y\r\n\r\n",          // leading whitespace
        "0\r\nX: y\r\n folded\r\n\r\n",  // obs-fold
        "0\r\n: y\r\n\r\n",            // empty name
        "0\r\nNoColon\r\n\r\n",
        "0\r\nX: a\rb\r\n\r\n",
    ])
    func rejectsMalformedTrailers(_ raw: String) {
        #expect(rejection(raw)?.status == 400, "\(raw.debugDescription)")
    }

    @Test func rejectsControlBytesInTrailerValues() {
        for bad: UInt8 in [0x00, 0x01, 0x1F, 0x7F] {
            let raw = Array("0\r\nX: a".utf8) + [bad] + Array("\r\n\r\n".utf8)
            #expect(throws: HTTPParseError.self) { _ = try decode(raw) }
        }
    }

    @Test func capsTheTrailerSection() throws {
        let decoder = ChunkedDecoder(maxTrailerBytes: 32)
        #expect(try decode("0\r\nX: 1234567890\r\n\r\n", decoder: decoder).complete)
        let error = rejection("0\r\nX: " + String(repeating: "v", count: 40) + "\r\n\r\n", decoder: decoder)
        #expect(error?.reason == "Bad Request: trailer section too large")
    }

    @Test func passesErrorsFromTheDataHandlerThrough() {
        var decoder = ChunkedDecoder()
        let raw = Array("5\r\nhello\r\n0\r\n\r\n".utf8)
        let error = #expect(throws: HTTPParseError.self) {
            _ = try raw.withRawBytes { (buf) throws(HTTPParseError) in
                try decoder.decode(buf) { (_: UnsafeRawBufferPointer) throws(HTTPParseError) in
                    throw HTTPParseError(status: 413, reason: "Content Too Large")
                }
            }
        }
        #expect(error?.status == 413)
    }

    @Test func decodesAgainAfterReset() throws {
        var decoder = ChunkedDecoder()
        let raw = Array("2\r\nab\r\n0\r\n\r\n".utf8)
        for _ in 0..<2 {
            var body: [UInt8] = []
            let used = try raw.withRawBytes { (buf) throws(HTTPParseError) in
                try decoder.decode(buf) { body.append(contentsOf: $0) }
            }
            #expect(used == raw.count)
            #expect(body == Array("ab".utf8))
            #expect(decoder.isComplete)
            // A complete decoder consumes nothing more until reset.
            #expect(try raw.withRawBytes { (buf) throws(HTTPParseError) in try decoder.decode(buf) { _ in } } == 0)
            decoder.reset()
        }
    }
}

struct HTTPMutatedChunkedBodyTests {
    /// Feeding whole or one byte at a time gives the same body, consumption and verdict.
    @Test func givesTheSameVerdictWholeOrByteByByteForMutatedBodies() {
        let seed = Array("5;a=\"b c\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: v\r\n\r\nNEXT".utf8)
        var random = ParserTestRandom(state: 7)
        for round in 0..<3000 {
            let raw = mutateForParserTests(seed, &random)
            var verdicts: [String] = []
            for step in [nil, 1] as [Int?] {
                do {
                    let result = try decode(raw, step: step)
                    verdicts.append("ok \(result.body) \(result.consumed) \(result.complete)")
                } catch {
                    verdicts.append("error \(error)")
                }
            }
            #expect(verdicts[0] == verdicts[1], "round \(round): \(String(decoding: raw, as: UTF8.self).debugDescription)")
        }
    }
}
