#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Collects a message head that may arrive split across any number of reads.
///
/// Only line ends are looked for here (with `memchr`, which is vectorised, rather than a Swift loop
/// over every byte); validating the head is `HeadParser`'s job once it is complete. The scan position
/// is kept between calls (`lineStart` plus the bytes already appended), so every byte is searched
/// exactly once: feeding a head one byte at a time costs O(n), not O(n²), and a terminator split
/// across two reads (`\r\n\r` + `\n`) is still found.
///
/// The head ends at the first empty line: `\r\n\r\n`, or any mix with bare LF line ends
/// (`\n\n`, `\r\n\n`, `\n\r\n`), which RFC 9112 §2.2 allows a recipient to accept in the head.
/// A bare CR is not a line end here: the parser rejects one inside a complete head, and one in
/// a head still waiting for its line end is refused here at once.
public struct HeadAccumulator {
    /// Bytes collected so far: the start line through the terminating blank line once complete.
    /// Leading empty lines before a request line are not kept.
    public private(set) var bytes: [UInt8]
    public var limits: HeadLimits
    /// Requests get 414/431 errors and have leading empty lines skipped; responses get 502.
    public let isRequest: Bool
    /// The empty line that ends the head has been appended.
    public private(set) var isComplete: Bool

    /// Index in `bytes` of the first byte of the line being collected; everything before it
    /// has already been searched for line ends.
    private var lineStart: Int
    /// A non-empty first line was seen, so the next empty line ends the head.
    private var sawStartLine: Bool
    /// Leading empty lines dropped before the request line; they still count toward the limit so
    /// that a client cannot make us scan an unbounded stream of CRLFs.
    private var skipped: Int
    /// `bytes[..<crCheckedUpTo]` holds no bare CR (see `hasBareCR`).
    private var crCheckedUpTo = 0

    /// Room for the method, two spaces, `HTTP/1.1` and CRLF on top of `maxTargetBytes` before a
    /// request line that is still growing is refused with 414. Generous so that an unusual (long)
    /// method never turns a legitimate request into a 414; the parser then checks the target exactly.
    public static let requestLineSlack = 256

    public init(limits: HeadLimits, isRequest: Bool) {
        self.bytes = []
        self.limits = limits
        self.isRequest = isRequest
        self.isComplete = false
        self.lineStart = 0
        self.sawStartLine = false
        self.skipped = 0
    }

    /// Appends bytes from `input` up to and including the blank line that ends the head.
    ///
    /// Returns how many bytes of `input` were consumed; `isComplete` is then true when the head ended
    /// inside `input` (bytes after it — body or the next pipelined request — are not consumed).
    /// Throws 431 when the head would exceed `limits.maxHeadBytes` (414 when it is the request line
    /// itself that never ends, or when the request line grows longer than `maxTargetBytes` plus
    /// `requestLineSlack`); for responses the error is 502. Calling it after completion consumes nothing.
    public mutating func append(_ input: UnsafeRawBufferPointer) throws(HTTPParseError) -> Int {
        guard !isComplete, let base = input.baseAddress, input.count > 0 else { return 0 }
        let src = base.assumingMemoryBound(to: UInt8.self)

        // Never look at more than the limit allows: a head that has not ended within it is refused,
        // so bytes past it never need to be searched or stored.
        let room = max(0, limits.maxHeadBytes - skipped - bytes.count)
        let window = min(input.count, room)
        // `src[appendFrom..<i]` is scanned and belongs to the head but is not yet in `bytes`.
        var appendFrom = 0
        var i = 0

        while i < window {
            guard let hit = memchr(src + i, 0x0A, window - i) else { break }
            let lf = UnsafeRawPointer(hit) - UnsafeRawPointer(src)
            // Position the LF would have in `bytes`, and the line it ends (CR, if any, included).
            let position = bytes.count + (lf - appendFrom)
            let length = position - lineStart
            let isEmptyLine = length == 0 || (length == 1 && byte(at: lineStart, src: src, appendFrom: appendFrom) == 0x0D)

            if isEmptyLine && sawStartLine {
                flush(src, from: appendFrom, to: lf + 1)
                isComplete = true
                return lf + 1
            }
            if isEmptyLine && isRequest {
                // RFC 9112 §2.2: ignore empty lines before the request line (a client may send a
                // stray CRLF after a previous body). Only empty lines can precede this point, so
                // dropping everything collected so far drops exactly them (e.g. a CR from the last read).
                skipped += bytes.count + (lf + 1 - appendFrom)
                bytes.removeAll(keepingCapacity: true)
                crCheckedUpTo = 0
                appendFrom = lf + 1
                lineStart = 0
            } else if isEmptyLine {
                // A response starting with an empty line: hand it over as an (invalid) head so the
                // parser reports a bad status line instead of us silently resynchronising.
                flush(src, from: appendFrom, to: lf + 1)
                isComplete = true
                return lf + 1
            } else {
                if !sawStartLine {
                    sawStartLine = true
                    try checkRequestLine(length: length)
                }
                lineStart = position + 1
            }
            i = lf + 1
        }

        flush(src, from: appendFrom, to: window)
        if !sawStartLine { try checkRequestLine(length: bytes.count) }
        // The head goes on past this read: refuse a bare CR in it now, not once the peer's deadline
        // runs out (with CRs for line ends the head would never end). A complete head is left to
        // the parser, so only heads split across reads pay for this scan.
        // Not in a request line still without its LF: whether that line turns out too long (414)
        // is only known at its end, and the verdict must not depend on where reads split.
        if (sawStartLine || !isRequest) && hasBareCR() { throw verdictForBareCR() }
        // Whatever follows, the head is already as large as allowed and has not ended.
        if skipped + bytes.count >= limits.maxHeadBytes { throw tooLarge() }
        return window
    }

    /// Empties the buffer for the next message, keeping its capacity.
    /// Nothing of a head was taken yet: no byte kept and no leading empty line counted.
    public var isPristine: Bool { bytes.isEmpty && skipped == 0 }

    /// Resets, and lets the storage go when it grew past `bytes` of capacity (a huge head once
    /// must not stay allocated in a pooled exchange).
    public mutating func reset(keepingAtMost limit: Int) {
        if bytes.capacity > limit { bytes = [] }
        reset()
    }

    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        isComplete = false
        lineStart = 0
        sawStartLine = false
        skipped = 0
        crCheckedUpTo = 0
    }

    /// Takes head bytes from the front of `input` (advancing it past them) and, once the head is
    /// complete, hands it over to `head` (`moveBytes(into:)`, which resets this accumulator).
    /// Returns whether it did; `input` then holds what follows the head.
    @inline(__always)
    public mutating func take(from input: inout UnsafeRawBufferPointer, completingInto head: inout [UInt8]) throws(HTTPParseError) -> Bool {
        let consumed = try append(input)
        input = UnsafeRawBufferPointer(rebasing: input[consumed...])
        guard isComplete else { return false }
        moveBytes(into: &head)
        return true
    }

    /// Hands the collected bytes to `other` and takes `other`'s storage (emptied) in exchange, then
    /// resets. A connection that swaps with its previous `RequestHead.bytes` reuses both buffers, so a
    /// keep-alive connection in steady state allocates nothing for heads.
    public mutating func moveBytes(into other: inout [UInt8]) {
        swap(&bytes, &other)
        reset()
    }

    // MARK: - Private

    /// The byte at `index` of the head as if `src[appendFrom...]` had already been appended.
    @inline(__always)
    private func byte(at index: Int, src: UnsafePointer<UInt8>, appendFrom: Int) -> UInt8 {
        index < bytes.count ? bytes[index] : src[appendFrom + index - bytes.count]
    }

    @inline(__always)
    private mutating func flush(_ src: UnsafePointer<UInt8>, from: Int, to: Int) {
        guard to > from else { return }
        bytes.append(contentsOf: UnsafeBufferPointer(start: src + from, count: to - from))
    }

    /// A request line longer than any acceptable target could make it is refused as soon as we know.
    @inline(__always)
    private func checkRequestLine(length: Int) throws(HTTPParseError) {
        if isRequest && length > limits.maxTargetBytes + Self.requestLineSlack {
            throw HTTPParseError(status: 414, reason: "URI Too Long")
        }
    }

    /// Whether the bytes collected since the last check hold a CR followed by something other
    /// than LF. A CR in the last byte is left for the next check: its LF may be in the next read.
    private mutating func hasBareCR() -> Bool {
        let end = bytes.count - 1
        guard end > crCheckedUpTo else { return false }
        let found = bytes.withUnsafeBufferPointer { p -> Bool in
            let base = p.baseAddress!
            var i = crCheckedUpTo
            while i < end, let hit = memchr(base + i, 0x0D, end - i) {
                let at = UnsafeRawPointer(hit) - UnsafeRawPointer(base)
                if base[at + 1] != 0x0A { return true }
                i = at + 1
            }
            return false
        }
        crCheckedUpTo = end
        return found
    }

    /// The error the parser would give this head once complete: the head is parsed as if it
    /// ended here, so a fault before the bare CR is named as it would be whole (a head gets one
    /// verdict however it is split). Rare: only for heads that hold a bare CR.
    private func verdictForBareCR() -> HTTPParseError {
        let truncated = bytes + [13, 10, 13, 10]
        do {
            if isRequest { _ = try HeadParser.parseRequest(truncated, limits: limits) }
            else { _ = try HeadParser.parseResponse(truncated, requestWasHEAD: false) }
        } catch {
            return error
        }
        return bareCR()
    }

    private func bareCR() -> HTTPParseError {
        // The parser's own words for the same fault: a head gets one verdict however it is split.
        isRequest ? HTTPParseError(status: 400, reason: "Bad Request: bare CR")
                  : HTTPParseError(status: 502, reason: "Bad Gateway: bare CR")
    }

    private func tooLarge() -> HTTPParseError {
        if !isRequest {
            return HTTPParseError(status: 502, reason: "Bad Gateway: response head too large")
        }
        // No line end yet after a non-empty first line: it is the request line that is too long.
        if !sawStartLine && !bytes.isEmpty {
            return HTTPParseError(status: 414, reason: "URI Too Long")
        }
        return HTTPParseError(status: 431, reason: "Request Header Fields Too Large")
    }
}
