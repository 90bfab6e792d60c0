import Glibc

/// Power of two choices over peak-EWMA latency (Finagle's and Linkerd's P2C + PeakEWMA): two
/// distinct healthy backends are drawn at random and the cheaper one taken, where cost is the
/// latency estimate × (in flight + 1) ÷ weight. Two random choices keep every backend in play
/// (no herd on the single best one) while a slow backend quickly loses nearly every comparison.
///
/// The estimate per backend, in microseconds to the response head:
/// - a slower observation replaces it at once (peak-sensitive); a faster one is averaged in
///   with weight `1 - e^(-Δt/τ)`, `τ` = 10 s;
/// - it also decays toward zero while the backend gets no answers (read as
///   `estimate × e^(-Δt/τ)`), so a backend that was slow once is tried again later rather than
///   starved for ever;
/// - an unmeasured backend starts at 1 ms; a failed attempt (refused, reset, timed out, or a
///   5xx answer) counts as twice the current estimate and at least 50 ms, so a backend that
///   fails fast does not look fast; no estimate exceeds 10 s.
///
/// Threading: a value, one loop.
struct P2CEWMABalancer {
    private var estimate: [Double]
    private var updatedAt: [UInt64]

    static let decayNs = 10e9
    static let initialMicros = 1_000.0
    static let failureFloorMicros = 50_000.0
    /// No estimate goes above 10 s (a run of failures must not starve a backend for minutes,
    /// and stays finite).
    static let ceilingMicros = 10_000_000.0

    /// All weights equal: candidates are drawn uniformly (no `pow` per candidate).
    private let weightsAreEqual: Bool

    init(count: Int, now: UInt64, weights: [Int] = []) {
        estimate = Array(repeating: Self.initialMicros, count: count)
        updatedAt = Array(repeating: now, count: count)
        weightsAreEqual = !weights.contains { $0 != weights.first }
    }

    func pick(from backends: [Backend], weights: [Int], excluding tried: AttemptSet, random: inout BalancerRandom, now: UInt64) -> Int? {
        // Two distinct available backends in one pass (a verdict another thread changes meanwhile
        // cannot leave a choice unfilled), drawn in proportion to weight: each candidate's key is
        // u^(1/w) and the two largest win (Efraimidis–Spirakis weighted sampling). Drawing them
        // uniformly would let pairs of light backends take most requests from a heavy one.
        var a = -1, b = -1
        var keyA = -1.0, keyB = -1.0
        let n = min(backends.count, estimate.count, weights.count)
        let uniform = weightsAreEqual
        for i in 0..<n where backends.canTake(i, tried) {
            let u = Double(random.next() >> 11) / Double(1 << 53)
            let key = uniform ? u : pow(u, 1 / Double(weights[i]))
            if key > keyA {
                b = a; keyB = keyA
                a = i; keyA = key
            } else if key > keyB {
                b = i; keyB = key
            }
        }
        guard a >= 0 else { return nil }
        guard b >= 0 else { return a }
        if random.below(2) == 0 { swap(&a, &b) }
        // Costs within 1 % are a tie, which goes to `a` (itself a uniform draw): estimates of
        // equally fast backends differ by their decay since their last answers, which must not
        // decide.
        return cost(b, backends, weights, now) * 1.01 < cost(a, backends, weights, now) ? b : a
    }

    private func cost(_ i: Int, _ backends: [Backend], _ weights: [Int], _ now: UInt64) -> Double {
        current(i, now) * Double(backends[i].activeRequests + 1) / Double(weights[i])
    }

    /// The estimate of backend `i` at `now`, decayed since its last update.
    func current(_ i: Int, _ now: UInt64) -> Double {
        let elapsed = now > updatedAt[i] ? Double(now - updatedAt[i]) : 0
        return estimate[i] * Self.decay(elapsed)
    }

    /// e^(-elapsed/τ); for the usual short gaps (under 100 ms) a second-order series, whose error
    /// (below 2·10⁻⁷) is far under what the estimate means, instead of `exp`.
    @inline(__always)
    static func decay(_ elapsedNs: Double) -> Double {
        let x = elapsedNs / decayNs
        return x < 0.01 ? 1 - x + 0.5 * x * x : exp(-x)
    }

    /// An attempt on backend `i` ended at `now`: `micros` to its response head, or a failure.
    mutating func observe(_ i: Int, micros: UInt64?, failed: Bool, now: UInt64) {
        guard i < estimate.count else { return }
        let elapsed = now > updatedAt[i] ? Double(now - updatedAt[i]) : 0
        // What the estimate reads as now (decayed since the last answer): the base a failure
        // doubles, so failures spread over time do not compound without end.
        let decayed = current(i, now)
        let sample = min(failed ? max(decayed * 2, Self.failureFloorMicros) : Double(micros ?? 0), Self.ceilingMicros)
        if sample > decayed {
            estimate[i] = sample
        } else {
            let w = Self.decay(elapsed)
            estimate[i] = estimate[i] * w + sample * (1 - w)
        }
        updatedAt[i] = now
    }
}
