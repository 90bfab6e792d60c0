/// A random available backend, in proportion to weight: one pass of weighted reservoir sampling
/// (a verdict that changes meanwhile cannot leave the pick without an answer).
/// Threading: a value, one loop.
struct RandomBalancer {
    func pick(from backends: [Backend], weights: [Int], excluding tried: AttemptSet, random: inout BalancerRandom) -> Int? {
        var chosen = -1, total = 0
        for i in 0..<min(backends.count, weights.count) where backends.canTake(i, tried) {
            total += weights[i]
            if random.below(total) < weights[i] { chosen = i }
        }
        return chosen >= 0 ? chosen : nil
    }
}
