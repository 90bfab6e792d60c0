/// A random healthy backend, in proportion to weight.
/// Threading: a value, one loop.
struct RandomBalancer {
    func pick(from backends: [Backend], excluding tried: AttemptSet, random: inout BalancerRandom) -> Int? {
        var total = 0
        for i in 0..<backends.count where backends.canTake(i, tried) { total += backends[i].weight }
        guard total > 0 else { return nil }
        var point = random.below(total)
        for i in 0..<backends.count where backends.canTake(i, tried) {
            point -= backends[i].weight
            if point < 0 { return i }
        }
        return nil
    }
}
