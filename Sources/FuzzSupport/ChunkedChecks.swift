import Proxy

/// How a chunked body fed to a decoder ended, and the data it handed out.
struct ChunkedOutcome: Equatable, CustomStringConvertible {
    enum End: Equatable {
        /// The message ended after this many input bytes.
        case complete(Int)
        case failed(HTTPParseError)
        case incomplete
    }

    var data: [UInt8] = []
    var end = End.incomplete

    var description: String { "\(end), data \"\(escape(data))\"" }

    /// Same end; errors compared by status only (the reference decoder has no reasons).
    func sameShape(as other: ChunkedOutcome) -> Bool {
        switch (end, other.end) {
        case (.failed(let a), .failed(let b)): return a.status == b.status && data == other.data
        default: return self == other
        }
    }
}

/// Feeds `input` to `decoder` in the pieces of `plan`, checking what every call returns.
func decodeChunked(_ input: FuzzInput, plan: [Int], decoder: inout ChunkedDecoder) -> ChunkedOutcome {
    var outcome = ChunkedOutcome()
    var offset = 0
    input.forEachPiece(plan) { piece in
        if case .failed = outcome.end { return }  // a refused body is never fed again
        var data = outcome.data
        defer { outcome.data = data }
        let consumed: Int
        do throws(HTTPParseError) {
            consumed = try decoder.decode(piece) { chunk in
                input.check(!chunk.isEmpty, "ChunkedDecoder handed out an empty slice")
                input.check(chunk.baseAddress! >= piece.baseAddress! && chunk.baseAddress! + chunk.count <= piece.baseAddress! + piece.count,
                            "ChunkedDecoder handed out a slice outside its input")
                data += chunk
            }
        } catch {
            outcome.end = .failed(error)
            input.check(error.status == 400, "ChunkedDecoder refused with \(error.status), not 400")
            return
        }
        input.check(consumed >= 0 && consumed <= piece.count, "ChunkedDecoder consumed \(consumed) of \(piece.count) bytes")
        if case .complete = outcome.end {
            // Re-feeding after completion consumes nothing (and `data` was not touched above).
            input.check(consumed == 0, "ChunkedDecoder consumed \(consumed) bytes after completion")
            input.check(data == outcome.data, "ChunkedDecoder handed out data after completion")
        } else if decoder.isComplete {
            outcome.end = .complete(offset + consumed)
        } else {
            input.check(consumed == piece.count,
                        "ChunkedDecoder left \(piece.count - consumed) of \(piece.count) bytes unconsumed without completing or failing")
        }
        offset += piece.count
    }
    if case .complete = outcome.end {
        input.check(decoder.isComplete, "ChunkedDecoder stopped being complete")
        input.check((try? decoder.decode(UnsafeRawBufferPointer(start: nil, count: 0)) { _ in }) == 0,
                    "ChunkedDecoder consumed an empty read after completion")
    } else {
        input.check(!decoder.isComplete, "ChunkedDecoder is complete but did not say so when it completed")
    }
    return outcome
}

/// An independent, whole-buffer decoder for RFC 9112 §7.1 as ChunkedDecoder documents it (1–15
/// hex digits, strict extensions and trailers, CRLF only), with no length limits. The oracle for
/// inputs too short to reach the decoder's limits.
func referenceChunkedDecode(_ b: [UInt8]) -> ChunkedOutcome {
    enum Stop: Error { case incomplete, invalid }
    var i = 0
    var out = ChunkedOutcome()
    let cr: UInt8 = 0x0D, lf: UInt8 = 0x0A
    func peek() throws(Stop) -> UInt8 {
        guard i < b.count else { throw .incomplete }
        return b[i]
    }
    func expect(_ c: UInt8) throws(Stop) {
        guard try peek() == c else { throw .invalid }
        i += 1
    }
    func skipWhitespace() throws(Stop) {
        while true {
            let c = try peek()
            guard c == 0x20 || c == 0x09 else { return }
            i += 1
        }
    }
    func skipToken() throws(Stop) {
        guard isTchar(try peek()) else { throw .invalid }
        while isTchar(try peek()) { i += 1 }
    }
    func hex(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: return Int(c - 0x30)
        case 0x41...0x46: return Int(c - 0x41 + 10)
        case 0x61...0x66: return Int(c - 0x61 + 10)
        default: return nil
        }
    }
    func isFieldValueByte(_ c: UInt8) -> Bool { c == 0x09 || (c >= 0x20 && c != 0x7F) }
    func isQdtext(_ c: UInt8) -> Bool { c == 0x09 || c == 0x20 || c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E) || c >= 0x80 }

    do throws(Stop) {
        while true {
            // chunk-size
            var size = 0, digits = 0
            while let h = hex(try peek()) {
                digits += 1
                guard digits <= 15 else { throw .invalid }
                size = size * 16 + h
                i += 1
            }
            guard digits > 0 else { throw .invalid }
            // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
            while true {
                let start = i
                try skipWhitespace()
                let c = try peek()
                if c == cr && i == start { break }
                guard c == UInt8(ascii: ";") else { throw .invalid }
                i += 1
                try skipWhitespace()
                try skipToken()
                let afterName = i
                try skipWhitespace()
                if try peek() == UInt8(ascii: "=") {
                    i += 1
                    try skipWhitespace()
                    if try peek() == UInt8(ascii: "\"") {
                        i += 1
                        while true {
                            let q = try peek()
                            i += 1
                            if q == UInt8(ascii: "\"") { break }
                            if q == UInt8(ascii: "\\") {
                                guard isFieldValueByte(try peek()) else { throw .invalid }
                                i += 1
                            } else if !isQdtext(q) {
                                throw .invalid
                            }
                        }
                    } else {
                        try skipToken()
                    }
                } else {
                    i = afterName
                }
            }
            try expect(cr)
            try expect(lf)
            if size == 0 {
                // trailer-section, then the final CRLF
                while true {
                    if try peek() == cr {
                        i += 1
                        try expect(lf)
                        out.end = .complete(i)
                        return out
                    }
                    try skipToken()
                    try expect(UInt8(ascii: ":"))
                    while isFieldValueByte(try peek()) { i += 1 }
                    try expect(cr)
                    try expect(lf)
                }
            }
            let available = min(size, b.count - i)
            out.data += b[i..<(i + available)]
            i += available
            guard available == size else { throw .incomplete }
            try expect(cr)
            try expect(lf)
        }
    } catch {
        out.end = error == .incomplete ? .incomplete : .failed(HTTPParseError(status: 400, reason: "reference"))
        return out
    }
}
