import Proxy

// The head components on the first message of an input: `HeadAccumulator` fed in pieces (what it
// consumes, what it drops, that it stops at the head's end), `moveBytes(into:)`, the fresh and the
// `into:` parses agreeing, and the semantic checks of an accepted head (HeadChecks.swift). Only
// the first head: the framing loop (bodies, the next pipelined message) is checked on the
// production connection and exchange (ConnectionChecks.swift), not on a model of it. The events
// must not depend on how the input was cut into reads.

struct RequestSnapshot: Equatable {
    var bytes: [UInt8]
    var method: Range<Int>
    var target: Range<Int>
    var versionMinor: UInt8
    var fields: [HeaderField]
    var framing: BodyFraming
    var keepAlive: Bool
    var expectsContinue: Bool
    var hostField: Int?

    init(_ h: RequestHead) {
        bytes = h.bytes; method = h.method; target = h.target; versionMinor = h.versionMinor; fields = h.fields
        framing = h.framing; keepAlive = h.keepAlive; expectsContinue = h.expectsContinue; hostField = h.hostField
    }
}

struct ResponseSnapshot: Equatable {
    var bytes: [UInt8]
    var status: UInt16
    var reason: Range<Int>
    var versionMinor: UInt8
    var fields: [HeaderField]
    var framing: BodyFraming
    var keepAlive: Bool

    init(_ h: ResponseHead) {
        bytes = h.bytes; status = h.status; reason = h.reason; versionMinor = h.versionMinor; fields = h.fields
        framing = h.framing; keepAlive = h.keepAlive
    }
}

enum StreamEvent: Equatable, CustomStringConvertible {
    case request(RequestSnapshot)
    case response(ResponseSnapshot)
    case error(HTTPParseError)
    /// End of input inside a message: what was pending.
    case end(String, [UInt8])

    var description: String {
        switch self {
        case .request(let r):
            return "request \"\(escape(r.bytes))\" method \(r.method) target \(r.target) 1.\(r.versionMinor) fields \(r.fields.map { "\($0.name)=\($0.value)" }) framing \(r.framing) keepAlive \(r.keepAlive) expectsContinue \(r.expectsContinue) host \(String(describing: r.hostField))"
        case .response(let r):
            return "response \"\(escape(r.bytes))\" status \(r.status) reason \(r.reason) 1.\(r.versionMinor) fields \(r.fields.map { "\($0.name)=\($0.value)" }) framing \(r.framing) keepAlive \(r.keepAlive)"
        case .error(let e): return "error \(e.status) \(e.reason)"
        case .end(let phase, let pending): return "end of input in \(phase), pending \"\(escape(pending))\""
        }
    }
}

/// Feeds one plan's reads through the model and returns the events.
struct FirstHeadChecker {
    enum Phase {
        case head
        /// The first head was parsed (or refused): the rest of the input is not looked at.
        case done
        case failed
    }

    let input: FuzzInput
    let isRequest: Bool
    let limits: HeadLimits
    let requestWasHEAD: Bool
    /// Check every accepted head and compare the `into:` parse with a fresh one. Needed for one
    /// plan only: the others must give the same events, heads included.
    var checkHeads = true

    var events: [StreamEvent] = []
    var phase = Phase.head
    var accumulator: HeadAccumulator
    /// Every byte the accumulator consumed for the current head.
    var headConsumed: [UInt8] = []
    var request = RequestHead()
    var response = ResponseHead()

    init(input: FuzzInput, isRequest: Bool, limits: HeadLimits, requestWasHEAD: Bool = false) {
        self.input = input
        self.isRequest = isRequest
        self.limits = limits
        self.requestWasHEAD = requestWasHEAD
        self.accumulator = HeadAccumulator(limits: limits, isRequest: isRequest)
    }

    static func run(_ input: FuzzInput, plan: [Int], isRequest: Bool, limits: HeadLimits,
                    requestWasHEAD: Bool = false, checkHeads: Bool) -> [StreamEvent] {
        var model = FirstHeadChecker(input: input, isRequest: isRequest, limits: limits, requestWasHEAD: requestWasHEAD)
        model.checkHeads = checkHeads
        input.forEachPiece(plan) { model.feed($0) }
        model.finish()
        return model.events
    }

    mutating func finish() {
        if case .head = phase, !accumulator.bytes.isEmpty || !headConsumed.isEmpty { events.append(.end("head", accumulator.bytes)) }
    }

    mutating func feed(_ read: UnsafeRawBufferPointer) {
        var rest = read
        // An empty read changes nothing (a zero-length read happens, e.g. after a rebased slice).
        if rest.isEmpty { return touchEmpty(rest) }
        while !rest.isEmpty {
            switch phase {
            case .head:
                guard let consumed = appendHead(rest) else { return }
                rest = UnsafeRawBufferPointer(rebasing: rest[consumed...])
                guard accumulator.isComplete else { return }
                headComplete(following: rest)
            case .done, .failed:
                return
            }
        }
    }

    /// An empty read in any phase consumes nothing and hands out nothing.
    mutating func touchEmpty(_ empty: UnsafeRawBufferPointer) {
        switch phase {
        case .head:
            let before = accumulator.bytes
            do throws(HTTPParseError) {
                input.check(try accumulator.append(empty) == 0, "HeadAccumulator consumed bytes of an empty read")
            } catch { input.fail("HeadAccumulator threw \(error) on an empty read") }
            input.check(accumulator.bytes == before && !accumulator.isComplete, "an empty read changed the HeadAccumulator")
        default:
            break
        }
    }

    /// Appends to the head; nil when the read was used up or the head was refused.
    mutating func appendHead(_ rest: UnsafeRawBufferPointer) -> Int? {
        let consumed: Int
        do throws(HTTPParseError) {
            consumed = try accumulator.append(rest)
        } catch {
            events.append(.error(error))
            phase = .failed
            return nil
        }
        input.check(consumed >= 0 && consumed <= rest.count, "HeadAccumulator consumed \(consumed) of \(rest.count) bytes")
        headConsumed += rest[0..<consumed]
        if !accumulator.isComplete {
            input.check(consumed == rest.count, "HeadAccumulator left \(rest.count - consumed) bytes unconsumed without completing or failing")
            return nil
        }
        return consumed
    }

    mutating func headComplete(following rest: UnsafeRawBufferPointer) {
        let raw = accumulator.bytes
        // The head is what was consumed, less empty lines before a request line.
        input.check(raw.last == 0x0A, "complete head does not end with LF: \"\(escape(raw))\"")
        input.check(headConsumed.count >= raw.count && Array(headConsumed.suffix(raw.count)) == raw,
                    "head bytes \"\(escape(raw))\" are not the end of the consumed bytes \"\(escape(headConsumed))\"")
        let dropped = headConsumed.prefix(headConsumed.count - raw.count)
        input.check(dropped.allSatisfy { $0 == 0x0D || $0 == 0x0A } && (isRequest || dropped.isEmpty),
                    "HeadAccumulator dropped \"\(escape(dropped))\" before the head")
        // Re-feeding after completion consumes nothing.
        withProbe(rest) { probe in
            do throws(HTTPParseError) {
                let again = try accumulator.append(probe)
                input.check(again == 0, "HeadAccumulator consumed \(again) bytes after completion")
            } catch { input.fail("HeadAccumulator threw \(error) after completion") }
        }
        input.check(accumulator.bytes == raw && accumulator.isComplete, "re-feeding a complete HeadAccumulator changed it")
        headConsumed.removeAll()

        if isRequest {
            parseRequest(raw)
        } else {
            parseResponse(raw)
        }
    }

    mutating func parseRequest(_ raw: [UInt8]) {
        let limits = self.limits
        let error = parseBothWays(input, raw, accumulator: &accumulator, into: &request, checkHeads: checkHeads,
                                  { (head) throws(HTTPParseError) in try HeadParser.parseRequest(into: &head, limits: limits) })
        if error == nil && checkHeads { checkAcceptedRequest(input, request, limits: limits) }
        headParsed(error) { ($0.request.snapshot, $0.request.framing) }
    }

    mutating func parseResponse(_ raw: [UInt8]) {
        let wasHEAD = requestWasHEAD
        let error = parseBothWays(input, raw, accumulator: &accumulator, into: &response, checkHeads: checkHeads,
                                  { (head) throws(HTTPParseError) in try HeadParser.parseResponse(into: &head, requestWasHEAD: wasHEAD) })
        if let error {
            input.check(error.status == 502, "a response was refused with \(error.status), not 502")
        } else if checkHeads {
            checkAcceptedResponse(input, response, requestWasHEAD: wasHEAD)
        }
        headParsed(error) { ($0.response.snapshot, $0.response.framing) }
    }

    /// Records the head's event (`parsed` is only called after a successful parse: a failed one
    /// leaves the head unspecified) or its error, and moves on to its body.
    mutating func headParsed(_ error: HTTPParseError?, _ parsed: (Self) -> (StreamEvent, BodyFraming)) {
        if let error {
            events.append(.error(error))
            phase = .failed
            return
        }
        let (event, framing) = parsed(self)
        events.append(event)
        startBody(framing)
    }

    /// The head's framing is consistent; the body is not followed (see the file's comment).
    mutating func startBody(_ framing: BodyFraming) {
        switch framing {
        case .contentLength(let n): input.check(n > 0, "framing .contentLength(0): must be .none")
        case .untilClose: input.check(!isRequest, "a request framed until close")
        case .none, .chunked: break
        }
        phase = .done
    }
}

/// Calls `body` with `rest`, or with a one-byte buffer when `rest` is empty: something to re-feed.
func withProbe(_ rest: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
    if !rest.isEmpty { return body(rest) }
    let probe: [UInt8] = [0x30]
    probe.withUnsafeBytes { body($0) }
}

/// Runs every plan and traps unless all give the events of the first ("whole").
func checkPlansAgree(_ input: FuzzInput, label: @autoclosure () -> String,
                     _ run: (_ pieces: [Int], _ first: Bool) -> [StreamEvent]) {
    let plans = input.plans
    let reference = run(plans[0].pieces, true)
    if verbose {
        print("  \(label()):")
        for event in reference { print("    \(event)") }
    }
    for plan in plans.dropFirst() {
        let events = run(plan.pieces, false)
        guard events != reference else { continue }
        let k = zip(events, reference).prefix(while: { $0 == $1 }).count
        let expected = k < reference.count ? reference[k].description : "(no more events)"
        let got = k < events.count ? events[k].description : "(no more events)"
        input.fail("\(label()): fed \(plan.name) the stream differs from feeding it whole at event \(k):\n"
                   + "  whole: \(expected)\n  \(plan.name): \(got)")
    }
}

/// Parses the complete head `raw` the connection's way (the accumulator's buffer swapped into
/// `head`, which holds the previous head's state, and parsed in place by `parse`) and, when heads
/// are checked, into a fresh head as well; checks that the hand-over reset the accumulator and that
/// the two parses agree (the same head or the same error). Returns the connection's way's error.
private func parseBothWays<Head: HTTPHeadBytes>(_ input: FuzzInput, _ raw: [UInt8], accumulator: inout HeadAccumulator, into head: inout Head,
                                                checkHeads: Bool, _ parse: (inout Head) throws(HTTPParseError) -> Void) -> HTTPParseError? {
    var fresh: Result<Head, HTTPParseError>?
    if checkHeads {
        var h = Head(bytes: raw)
        do throws(HTTPParseError) { try parse(&h); fresh = .success(h) } catch { fresh = .failure(error) }
    }
    accumulator.moveBytes(into: &head.bytes)
    input.check(accumulator.bytes.isEmpty && !accumulator.isComplete, "moveBytes(into:) did not reset the HeadAccumulator")
    input.check(head.bytes == raw, "moveBytes(into:) handed over different bytes")
    var reusedError: HTTPParseError?
    do throws(HTTPParseError) { try parse(&head) } catch { reusedError = error }
    switch (fresh, reusedError) {
    case (nil, _):
        break
    case (.success(let a), nil):
        input.check(a.snapshot == head.snapshot, "a fresh head and a reused one parse differently:\n  \(a.snapshot)\n  \(head.snapshot)")
    case (.failure(let a), .some(let b)):
        input.check(a == b, "a fresh head threw \(a) but a reused one threw \(b)")
    case (.success(let a), .some(let b)):
        input.fail("a fresh head parsed (\(a.snapshot)) but a reused one threw \(b)")
    case (.failure(let a), nil):
        input.fail("a fresh head threw \(a) but a reused one parsed (\(head.snapshot))")
    }
    return reusedError
}

/// A parsed head whose raw bytes the parser reads in place, and what of it the checks compare.
protocol HTTPHeadBytes {
    init(bytes: [UInt8])
    var bytes: [UInt8] { get set }
    var snapshot: StreamEvent { get }
}
extension RequestHead: HTTPHeadBytes {
    init(bytes: [UInt8]) { self.init(bytes: bytes, method: 0..<0) }
    var snapshot: StreamEvent { .request(RequestSnapshot(self)) }
}
extension ResponseHead: HTTPHeadBytes {
    init(bytes: [UInt8]) { self.init(bytes: bytes, status: 0) }
    var snapshot: StreamEvent { .response(ResponseSnapshot(self)) }
}
