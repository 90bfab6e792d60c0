/// The backend with the fewest requests in flight relative to its weight (`(in flight + 1) ÷
/// weight`, compared by cross-multiplying); ties — the usual case on a quiet worker, where every count is
/// 0 — broken at random in proportion to weight, so weights hold at low load too.
///
/// In flight is this worker's count (`Backend.activeRequests`): see `LoadBalancer` for why.
/// One pass: a verdict that changes meanwhile (another thread writes it) cannot desynchronise
/// anything. Threading: a value, one loop.
struct LeastRequestBalancer {
    func pick(from backends: [Backend], weights: [Int], excluding tried: AttemptSet, random: inout BalancerRandom) -> Int? {
        var best = -1, tieWeight = 0
        var bestActive = 0, bestWeight = 1
        for i in 0..<min(backends.count, weights.count) where backends.canTake(i, tried) {
            // (in flight + 1) ÷ weight: the load the pick would make. With plain in-flight an
            // idle light backend (0 ÷ 1) would beat a busy heavy one (1 ÷ 99) every time.
            let active = backends[i].activeRequests + 1, weight = weights[i]
            if best < 0 || active * bestWeight < bestActive * weight {
                best = i; bestActive = active; bestWeight = weight; tieWeight = weight
            } else if active * bestWeight == bestActive * weight {
                // Weighted reservoir: each tied backend ends up chosen with probability w / Σw.
                tieWeight += weight
                if random.below(tieWeight) < weight { best = i; bestActive = active; bestWeight = weight }
            }
        }
        return best >= 0 ? best : nil
    }
}
