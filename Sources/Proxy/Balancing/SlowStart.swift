/// Slow start (`slow_start_ms`, as Envoy's and HAProxy's `slowstart`): a backend that just became
/// available — added, back up, back from an ejection — gets a share that grows linearly from 10 %
/// of its weight to all of it over `slow_start_ms`, so a cold cache or JIT is not hit by a full
/// share at once. Applied on each worker's sweep (at least every second) by giving the balancer
/// scaled weights: while any backend ramps, every weight is × 100 (integer resolution for the
/// fraction), otherwise the weights are the plain ones.
enum SlowStart {
    static let floor = 0.1

    /// The weights the balancer should use at `now` (ns).
    static func weights(_ weights: [Int], availableSince: [UInt64], now: UInt64, slowStartMs: Int) -> [Int] {
        guard slowStartMs > 0 else { return weights }
        let span = Double(slowStartMs) * 1e6
        let factors = availableSince.map { since -> Double in
            let elapsed = now > since ? Double(now - since) : 0
            return elapsed >= span ? 1 : max(floor, elapsed / span)
        }
        guard factors.contains(where: { $0 < 1 }) else { return weights }
        return zip(weights, factors).map { w, f in max(1, Int((Double(w * 100) * f).rounded())) }
    }
}
