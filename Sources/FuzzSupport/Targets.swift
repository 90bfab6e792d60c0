import Proxy

// The three fuzz targets. Each takes one input, feeds it in every plan of `FuzzInput.plans`
// (whole, cut at a data-derived point, data-derived random pieces, byte by byte) and traps when
// an invariant breaks. The executables in Sources/Fuzz*/ call these from LLVMFuzzerTestOneInput
// (built with -DFUZZING) or from a corpus-replaying main (a normal build).

/// Limits small enough that short inputs reach the 414 and 431 paths.
let smallLimits = HeadLimits(maxHeadBytes: 300, maxTargetBytes: 24, maxHeaderCount: 5)

/// The input is a client's byte stream: pipelined requests with their bodies.
public func fuzzRequestStream(_ bytes: [UInt8]) {
    let input = FuzzInput(bytes)
    for (label, limits) in [("default limits", HeadLimits()), ("small limits", smallLimits)] {
        checkPlansAgree(input, label: "first request head, \(label)") { plan, first in
            FirstHeadChecker.run(input, plan: plan, isRequest: true, limits: limits, checkHeads: first)
        }
    }
    checkTranscriptsAgree(input, label: "answered by the proxy") { connectionTranscript(input, pieces: $0, proxied: false) }
    checkTranscriptsAgree(input, label: "proxied to a backend") { connectionTranscript(input, pieces: $0, proxied: true) }
}

/// The input is a backend's byte stream: a response (1xx interim ones first) with its body,
/// answering a GET request and, separately, a HEAD request.
public func fuzzResponseStream(_ bytes: [UInt8]) {
    let input = FuzzInput(bytes)
    for head in [false, true] {
        checkPlansAgree(input, label: "first response head, \(head ? "HEAD" : "GET") request") { plan, first in
            FirstHeadChecker.run(input, plan: plan, isRequest: false, limits: HeadLimits(), requestWasHEAD: head, checkHeads: first)
        }
        for http11 in [false, true] {
            checkTranscriptsAgree(input, label: "relayed to an HTTP/1.\(http11 ? 1 : 0) client, \(head ? "HEAD" : "GET") request") {
                responseTranscript(input, pieces: $0, head: head, http11: http11)
            }
        }
    }
}

/// The input is a chunked body (and whatever follows it).
public func fuzzChunkedBody(_ bytes: [UInt8]) {
    let input = FuzzInput(bytes)
    let configs = [("default limits", ChunkedDecoder()),
                   ("small limits", ChunkedDecoder(maxChunkLineBytes: 12, maxTrailerBytes: 24))]
    let plans = input.plans
    for (label, fresh) in configs {
        var decoder = fresh
        let reference = decodeChunked(input, plan: plans[0].pieces, decoder: &decoder)
        if verbose { print("  \(label): \(reference)") }
        for plan in plans.dropFirst() {
            // A used decoder after reset() behaves like a new one: reuse the last plan's.
            decoder.reset()
            let outcome = decodeChunked(input, plan: plan.pieces, decoder: &decoder)
            input.check(outcome == reference, "ChunkedDecoder, \(label): fed \(plan.name): \(outcome)\n  fed whole: \(reference)")
        }
        if label == "default limits" && bytes.count <= fresh.maxChunkLineBytes {
            // Too short to reach a limit: the reference decoder must agree exactly.
            let expected = referenceChunkedDecode(bytes)
            input.check(reference.sameShape(as: expected),
                        "ChunkedDecoder disagrees with the reference decoder:\n  decoder:   \(reference)\n  reference: \(expected)")
        }
    }
}
