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
        checkPlansAgree(input, label: "request stream, \(label)") { plan, first in
            StreamModel.run(input, plan: plan, isRequest: true, limits: limits, checkHeads: first)
        }
    }
    checkConnectionAgrees(input)
}

/// The input is an upstream's byte stream: responses (1xx interim ones included) with their bodies,
/// answering GET requests and, separately, HEAD requests.
public func fuzzResponseStream(_ bytes: [UInt8]) {
    let input = FuzzInput(bytes)
    for head in [false, true] {
        checkPlansAgree(input, label: "response stream, \(head ? "HEAD" : "GET") request") { plan, first in
            StreamModel.run(input, plan: plan, isRequest: false, limits: HeadLimits(), requestWasHEAD: head, checkHeads: first)
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
