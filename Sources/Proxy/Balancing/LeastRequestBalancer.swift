/// The backend with the fewest requests in flight relative to its weight (`in flight ÷ weight`,
/// compared by cross-multiplying), ties broken at random so equal backends share the load
/// instead of the first one taking every tie.
///
/// In flight is this worker's count (`Backend.activeRequests`): see `LoadBalancer` for why.
/// Threading: a value, one loop.
struct LeastRequestBalancer {
    func pick(from backends: [Backend], excluding tried: AttemptSet, random: inout BalancerRandom) -> Int? {
        var best = -1, ties = 0
        var bestActive = 0, bestWeight = 1
        for i in 0..<backends.count where backends.canTake(i, tried) {
            let active = backends[i].activeRequests, weight = backends[i].weight
            if best < 0 || active * bestWeight < bestActive * weight {
                best = i; bestActive = active; bestWeight = weight; ties = 1
            } else if active * bestWeight == bestActive * weight {
                // Reservoir sampling: each of k tied backends ends up chosen with probability 1/k.
                ties += 1
                if random.below(ties) == 0 { best = i; bestActive = active; bestWeight = weight }
            }
        }
        return best >= 0 ? best : nil
    }
}
