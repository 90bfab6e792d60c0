/// Round-robin over the healthy backends; smooth weighted round-robin (nginx's algorithm) when
/// their weights differ: each pick adds every candidate's weight to its running score, takes the
/// highest and takes the sum of the weights off it, so weights 5, 1, 1 give a a b a c a a, not a
/// burst of five.
///
/// `tried` lets one request fail over to the next backend without picking the same one twice.
/// Threading: a value, one loop.
public struct RoundRobinBalancer: Sendable {
    private var next = 0
    /// Per backend: its weight (nil when all are equal: plain rotation) and running score.
    private var weights: [Int]?
    private var scores: [Int] = []

    public init() {}

    /// For `backends` with these weights.
    init(weights: [Int]) {
        if let first = weights.first, weights.contains(where: { $0 != first }) {
            self.weights = weights
            scores = Array(repeating: 0, count: weights.count)
        }
    }

    /// The next healthy backend not yet tried, or `nil` when there is none.
    public mutating func pick(from backends: [Backend], excluding tried: AttemptSet = AttemptSet()) -> Int? {
        if let weights, weights.count == backends.count { return pickWeighted(backends, weights, tried) }
        let n = backends.count
        guard n > 0 else { return nil }
        var i = 0
        while i < n {
            let candidate = (next + i) % n
            if backends.canTake(candidate, tried) {
                next = (candidate + 1) % n
                return candidate
            }
            i += 1
        }
        return nil
    }

    private mutating func pickWeighted(_ backends: [Backend], _ weights: [Int], _ tried: AttemptSet) -> Int? {
        var best = -1, total = 0
        for i in 0..<backends.count where backends.canTake(i, tried) {
            scores[i] += weights[i]
            total += weights[i]
            if best < 0 || scores[i] > scores[best] { best = i }
        }
        if best >= 0 { scores[best] -= total }
        return best >= 0 ? best : nil
    }
}
