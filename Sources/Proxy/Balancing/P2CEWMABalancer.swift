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
    /// One backend's estimate (µs) and when it was last updated (loop ns): side by side, so an
    /// update touches one array (one uniqueness check, one bounds check).
    private struct Slot {
        var estimate: Double
        var updatedAt: UInt64
    }
    private var slots: [Slot]

    static let decayNs = 10e9
    static let initialMicros = 1_000.0
    static let failureFloorMicros = 50_000.0
    /// No estimate goes above 10 s (a run of failures must not starve a backend for minutes,
    /// and stays finite).
    static let ceilingMicros = 10_000_000.0

    /// All weights equal: the two candidates are drawn directly (two draws, whatever the pool size).
    private let weightsAreEqual: Bool

    init(count: Int, now: UInt64, weights: [Int] = []) {
        slots = Array(repeating: Slot(estimate: Self.initialMicros, updatedAt: now), count: count)
        weightsAreEqual = !weights.contains { $0 != weights.first }
    }

    func pick(from backends: [Backend], weights: [Int], excluding tried: AttemptSet, random: inout BalancerRandom, now: UInt64) -> Int? {
        let n = min(backends.count, slots.count, weights.count)
        var a = -1, b = -1
        if weightsAreEqual && n >= 2 {
            // Two distinct indices, uniformly: the usual case costs two draws and two checks.
            a = random.below(n)
            b = random.below(n - 1)
            if b >= a { b += 1 }
            if !backends.canTake(a, tried) || !backends.canTake(b, tried) { (a, b) = scan(backends, weights, tried, n, &random) }
        } else {
            (a, b) = scan(backends, weights, tried, n, &random)
        }
        guard a >= 0 else { return nil }
        guard b >= 0 else { return a }
        // Costs within 1 % are a tie, which goes to `a` (itself a uniform draw): estimates of
        // equally fast backends differ by their decay since their last answers, which must not
        // decide.
        return cost(b, backends, weights, now) * 1.01 < cost(a, backends, weights, now) ? b : a
    }

    /// Two distinct available backends in one pass (a verdict another thread changes meanwhile
    /// cannot leave a choice unfilled), drawn in proportion to weight: each candidate's key is
    /// u^(1/w) and the two largest win (Efraimidis–Spirakis weighted sampling). Drawing them
    /// uniformly would let pairs of light backends take most requests from a heavy one. `a` and
    /// `b` come back in random order (`a` wins ties).
    private func scan(_ backends: [Backend], _ weights: [Int], _ tried: AttemptSet, _ n: Int,
                      _ random: inout BalancerRandom) -> (Int, Int) {
        var a = -1, b = -1
        var keyA = -1.0, keyB = -1.0
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
        if b >= 0 && random.below(2) == 0 { swap(&a, &b) }
        return (a, b)
    }

    @inline(__always)
    private func cost(_ i: Int, _ backends: [Backend], _ weights: [Int], _ now: UInt64) -> Double {
        current(i, now) * Double(backends[i].activeRequests + 1) / Double(weights[i])
    }

    /// The estimate of backend `i` at `now`, decayed since its last update.
    @inline(__always)
    func current(_ i: Int, _ now: UInt64) -> Double {
        let slot = slots[i]
        return slot.estimate * Self.decay(now > slot.updatedAt ? Double(now - slot.updatedAt) : 0)
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
        guard i < slots.count else { return }
        let slot = slots[i]
        let w = Self.decay(now > slot.updatedAt ? Double(now - slot.updatedAt) : 0)
        // What the estimate reads as now (decayed since the last answer): the base a failure
        // doubles, so failures spread over time do not compound without end.
        let decayed = slot.estimate * w
        let sample = min(failed ? max(decayed * 2, Self.failureFloorMicros) : Double(micros ?? 0), Self.ceilingMicros)
        slots[i] = Slot(estimate: sample > decayed ? sample : slot.estimate * w + sample * (1 - w), updatedAt: now)
    }
}
