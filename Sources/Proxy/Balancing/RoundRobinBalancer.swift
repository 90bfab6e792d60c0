/// Round-robin over the healthy backends.
///
/// `tried` lets one request fail over to the next backend without picking the same one twice.
public struct RoundRobinBalancer: Sendable {
    private var next = 0

    public init() {}

    /// The next healthy backend not yet tried, or `nil` when there is none.
    public mutating func pick(from backends: [Backend], excluding tried: AttemptSet = AttemptSet()) -> Int? {
        let n = backends.count
        guard n > 0 else { return nil }
        var i = 0
        while i < n {
            let candidate = (next + i) % n
            if backends[candidate].isHealthy && !tried.contains(candidate) {
                next = (candidate + 1) % n
                return candidate
            }
            i += 1
        }
        return nil
    }
}
