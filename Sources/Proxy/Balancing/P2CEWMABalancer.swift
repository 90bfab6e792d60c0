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
/// - an unmeasured backend starts at 1 ms; a failed attempt (refused, reset, timed out) counts
///   as twice the estimate and at least 50 ms, so a backend that fails fast does not look fast.
///
/// Threading: a value, one loop.
struct P2CEWMABalancer {
    private var estimate: [Double]
    private var updatedAt: [UInt64]

    static let decayNs = 10e9
    static let initialMicros = 1_000.0
    static let failureFloorMicros = 50_000.0

    init(count: Int, now: UInt64) {
        estimate = Array(repeating: Self.initialMicros, count: count)
        updatedAt = Array(repeating: now, count: count)
    }

    func pick(from backends: [Backend], excluding tried: AttemptSet, random: inout BalancerRandom, now: UInt64) -> Int? {
        let n = min(backends.count, estimate.count)
        var eligible = 0
        for i in 0..<n where backends.canTake(i, tried) { eligible += 1 }
        guard eligible > 0 else { return nil }
        // Two distinct ordinals among the eligible backends, then their indices.
        let first = random.below(eligible)
        var second = eligible > 1 ? random.below(eligible - 1) : first
        if eligible > 1 && second >= first { second += 1 }
        var a = -1, b = -1, ordinal = 0
        for i in 0..<n where backends.canTake(i, tried) {
            if ordinal == first { a = i }
            if ordinal == second { b = i }
            ordinal += 1
        }
        if a == b { return a }
        // Costs within 1 % are a tie, which goes to `a` (itself a uniform draw): estimates of
        // equally fast backends differ by their decay since their last answers, which must not
        // decide.
        return cost(b, backends, now) * 1.01 < cost(a, backends, now) ? b : a
    }

    private func cost(_ i: Int, _ backends: [Backend], _ now: UInt64) -> Double {
        current(i, now) * Double(backends[i].activeRequests + 1) / Double(backends[i].weight)
    }

    /// The estimate of backend `i` at `now`, decayed since its last update.
    func current(_ i: Int, _ now: UInt64) -> Double {
        let elapsed = now > updatedAt[i] ? Double(now - updatedAt[i]) : 0
        return estimate[i] * exp(-elapsed / Self.decayNs)
    }

    /// An attempt on backend `i` ended at `now`: `micros` to its response head, or a failure.
    mutating func observe(_ i: Int, micros: UInt64?, failed: Bool, now: UInt64) {
        guard i < estimate.count else { return }
        let elapsed = now > updatedAt[i] ? Double(now - updatedAt[i]) : 0
        let previous = estimate[i]
        let sample = failed ? max(previous * 2, Self.failureFloorMicros) : Double(micros ?? 0)
        if sample > previous {
            estimate[i] = sample
        } else {
            let w = exp(-elapsed / Self.decayNs)
            estimate[i] = previous * w + sample * (1 - w)
        }
        updatedAt[i] = now
    }
}
